-- pgflow schema, version 5: retention. Terminal runs by the time they ended, so a batch of
-- `prune_runs` reads the oldest ones first without scanning the table (and live runs, the hot part
-- of the table, are not in this index at all).

CREATE INDEX IF NOT EXISTS runs_ended_idx ON {schema}.runs (completed_at, id)
    WHERE status IN ('completed', 'failed', 'cancelled');
