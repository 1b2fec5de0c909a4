-- pgflow schema, version 1. Every name below lives in the configured schema ({schema}).
-- Ids compare with COLLATE "C" (byte order) so keyset pagination orders exactly like Python strings.
-- Workflow values (input, output, step output, event data) are json, not jsonb: json keeps the text,
-- so dict key order is the same on replay as on first execution. Cast to jsonb to index or compare.

CREATE TABLE {schema}.workflows (
    id            text PRIMARY KEY,
    steps         jsonb NOT NULL,
    settings      jsonb NOT NULL DEFAULT jsonb_build_object(),
    registered_at timestamptz NOT NULL
);

CREATE TABLE {schema}.runs (
    id               text COLLATE "C" PRIMARY KEY,
    workflow_id      text NOT NULL,
    resource_id      text,
    status           text NOT NULL
        CHECK (status IN ('pending', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    input            json,
    output           json,
    error            jsonb,
    current_step_id  text,
    waiting_step_id  text,
    waiting_kind     text,
    waiting_event    text,
    waiting_wake_at  timestamptz,
    wake_at          timestamptz,
    due_at           timestamptz,
    held             boolean NOT NULL DEFAULT false,
    retry_count      integer NOT NULL DEFAULT 0,
    max_retries      integer NOT NULL DEFAULT 0,
    retry_backoff    double precision NOT NULL DEFAULT 1.0,
    idempotency_key  text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    paused_at        timestamptz,
    resumed_at       timestamptz,
    completed_at     timestamptz,
    timeout_at       timestamptz,
    lease_owner      text,
    lease_token      bigint NOT NULL DEFAULT 0,
    lease_expires_at timestamptz,
    mailbox_seq      bigint NOT NULL DEFAULT 0,
    parent_run_id    text COLLATE "C",
    parent_step_id   text
);

CREATE UNIQUE INDEX runs_idempotency_key_key ON {schema}.runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_claim_idx ON {schema}.runs (due_at) WHERE status IN ('pending', 'paused');
CREATE INDEX runs_lease_idx ON {schema}.runs (lease_expires_at) WHERE lease_owner IS NOT NULL;
CREATE INDEX runs_created_idx ON {schema}.runs (created_at DESC, id DESC);
CREATE INDEX runs_resource_idx ON {schema}.runs (resource_id, created_at, id);
CREATE INDEX runs_workflow_idx ON {schema}.runs (workflow_id, created_at, id);
CREATE INDEX runs_parent_idx ON {schema}.runs (parent_run_id) WHERE parent_run_id IS NOT NULL;

CREATE TABLE {schema}.steps (
    run_id       text COLLATE "C" NOT NULL REFERENCES {schema}.runs (id) ON DELETE CASCADE,
    step_id      text NOT NULL,
    seq          bigserial NOT NULL,
    kind         text NOT NULL,
    status       text NOT NULL CHECK (status IN ('completed', 'failed', 'waiting')),
    output       json,
    error        jsonb,
    timed_out    boolean NOT NULL DEFAULT false,
    attempts     integer NOT NULL DEFAULT 0,
    started_at   timestamptz,
    completed_at timestamptz,
    wake_at      timestamptz,
    timeout_at   timestamptz,
    event        text,
    run_attempt  integer NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, step_id)
);

CREATE TABLE {schema}.events (
    id               bigserial PRIMARY KEY,
    run_id           text COLLATE "C" NOT NULL REFERENCES {schema}.runs (id) ON DELETE CASCADE,
    name             text NOT NULL,
    data             json,
    created_at       timestamptz NOT NULL,
    consumed_by_step text,
    consumed_at      timestamptz
);

CREATE INDEX events_unconsumed_idx ON {schema}.events (run_id, id) WHERE consumed_by_step IS NULL;
CREATE INDEX events_run_idx ON {schema}.events (run_id);
