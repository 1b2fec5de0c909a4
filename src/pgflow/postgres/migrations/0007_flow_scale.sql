-- pgflow schema, version 7: flow control at scale (benchmarks/flow_scale.py, a million runs).
--
-- A freed place wakes the best run parked on its key and the best parked on its workflow (unpark):
-- one index per kind of parking, each in wake order, so both are read from the front of an index.
-- runs_parked_idx put the concurrency key before the priority, so the best run parked on the
-- workflow was found by sorting every run parked on it (0.4-0.5 s with 250,000 parked).
DROP INDEX {schema}.runs_parked_idx;
CREATE INDEX runs_parked_key_idx ON {schema}.runs (workflow_id, concurrency_key, priority DESC, created_at, id)
    WHERE parked = 'key';
CREATE INDEX runs_parked_workflow_idx ON {schema}.runs (workflow_id, priority DESC, created_at, id)
    WHERE parked = 'workflow';

-- Every claim and step moves runs out of runs_ready_idx and runs_lease_idx, leaving dead entries at
-- the front of both, where each claim starts reading. On a big table autovacuum waited for 20 % of
-- dead rows and then skipped the index clean-up (INDEX_CLEANUP AUTO bypasses it while the dead rows
-- sit on few pages): with a million runs a claim read 398 buffers instead of 71 and the 10-step
-- throughput fell to 0.73 of an empty schema's. Vacuum runs early, and always cleans the indexes.
ALTER TABLE {schema}.runs SET (
    vacuum_index_cleanup = on,
    autovacuum_vacuum_scale_factor = 0.01,
    autovacuum_vacuum_threshold = 1000
);
