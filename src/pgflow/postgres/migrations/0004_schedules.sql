-- pgflow schema, version 4: durable cron schedules (SPEC §16). A schedule keeps its next tick; a
-- worker that finds it due locks the row (FOR UPDATE SKIP LOCKED), inserts the runs of its due ticks
-- (idempotency key "schedule:ID:TICK") and moves next_tick_at past now, in one transaction.
-- next_tick_at is NULL while the schedule is paused.

CREATE TABLE {schema}.schedules (
    id            text COLLATE "C" PRIMARY KEY,
    workflow_id   text NOT NULL,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    input         json,
    catch_up      text NOT NULL CHECK (catch_up IN ('latest', 'all', 'none')),
    paused        boolean NOT NULL DEFAULT false,
    next_tick_at  timestamptz,
    last_tick_at  timestamptz,
    last_run_id   text COLLATE "C",
    created_at    timestamptz NOT NULL,
    updated_at    timestamptz NOT NULL
);

CREATE INDEX schedules_due_idx ON {schema}.schedules (next_tick_at) WHERE NOT paused;
