-- pgflow schema, version 2: a step is recorded while its code runs (status 'running'), and each
-- record has its place in its run (seq 1, 2, … in the order the run first reached its steps). The
-- old table-wide write counter `seq` is kept as `pos` (it breaks ties between seq 0 records).

ALTER TABLE {schema}.steps DROP CONSTRAINT steps_status_check;
ALTER TABLE {schema}.steps ADD CONSTRAINT steps_status_check
    CHECK (status IN ('running', 'completed', 'failed', 'waiting'));

ALTER TABLE {schema}.steps RENAME COLUMN seq TO pos;
ALTER TABLE {schema}.steps ADD COLUMN seq integer NOT NULL DEFAULT 0;
UPDATE {schema}.steps AS s SET seq = numbered.seq
FROM (
    SELECT run_id, step_id, row_number() OVER (PARTITION BY run_id ORDER BY pos) AS seq
    FROM {schema}.steps
) AS numbered
WHERE s.run_id = numbered.run_id AND s.step_id = numbered.step_id;
