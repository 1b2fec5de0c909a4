-- pgflow schema, version 3: flow control (SPEC §16). Runs have a priority and a concurrency key;
-- a run of a workflow with a concurrency limit holds a place (slot_held) from its first claim until
-- it ends, and a run the limits hold back is parked (not due) until a place frees: 'workflow' when
-- the workflow's limit held it back, 'key' when its key's did. Workflows store their limits.

ALTER TABLE {schema}.runs ADD COLUMN priority integer NOT NULL DEFAULT 0;
ALTER TABLE {schema}.runs ADD COLUMN concurrency_key text;
ALTER TABLE {schema}.runs ADD COLUMN slot_held boolean NOT NULL DEFAULT false;
ALTER TABLE {schema}.runs ADD COLUMN parked text CHECK (parked IN ('workflow', 'key'));

ALTER TABLE {schema}.workflows ADD COLUMN concurrency integer;
ALTER TABLE {schema}.workflows ADD COLUMN key_concurrency integer;

-- The claim reads ready runs priority level by priority level (highest first), each in due order:
-- runs waiting for an event (no due time) and parked runs are not in it.
CREATE INDEX runs_ready_idx ON {schema}.runs (priority DESC, due_at, created_at, id)
    WHERE status IN ('pending', 'paused') AND due_at IS NOT NULL;
-- The places in use, counted per workflow and key when a limited workflow's runs are claimed.
CREATE INDEX runs_slots_idx ON {schema}.runs (workflow_id, concurrency_key) WHERE slot_held;
-- The next parked run to wake when a place frees: the best of a key, or of a workflow.
CREATE INDEX runs_parked_idx ON {schema}.runs (workflow_id, parked, concurrency_key, priority DESC, created_at, id)
    WHERE parked IS NOT NULL;
-- Expired leases in claim order without a sort, however many expired at the same time.
DROP INDEX {schema}.runs_lease_idx;
CREATE INDEX runs_lease_idx ON {schema}.runs (lease_expires_at, created_at, id) WHERE lease_owner IS NOT NULL;
