-- Named queries of the Postgres store. Each block starts with "-- name: NAME", then one or more
-- comment lines saying what it does, then the SQL. {schema} is replaced by the quoted schema
-- identifier; parameters are psycopg named placeholders. No query reads the server clock: every
-- time is a parameter, so a simulated engine clock drives Postgres too.

-- name: register_workflow
-- Store (or replace) a workflow's static step list, its run defaults (retries, timeout, backoff) and
-- its concurrency limits.
INSERT INTO {schema}.workflows (id, steps, settings, registered_at, concurrency, key_concurrency)
VALUES (%(id)s, %(steps)s, %(settings)s, %(now)s, %(concurrency)s, %(key_concurrency)s)
ON CONFLICT (id) DO UPDATE
SET steps = excluded.steps, settings = excluded.settings, registered_at = excluded.registered_at,
    concurrency = excluded.concurrency, key_concurrency = excluded.key_concurrency

-- name: lock_workflow_limits
-- Registering a workflow, first statement: lock its row (as a limited claim does: lock_limits) and
-- read the limits it had, to tell whether they change.
SELECT concurrency, key_concurrency FROM {schema}.workflows WHERE id = %(id)s FOR UPDATE

-- name: unpark_all
-- A workflow's limits changed: every run parked under the old ones is due again (the next limited
-- claim admits or parks it under the new ones) and the workers are woken.
WITH parked AS (  -- each kind through its index (runs_parked_key_idx, runs_parked_workflow_idx)
    SELECT id FROM {schema}.runs WHERE workflow_id = %(workflow_id)s AND parked = 'key'
    UNION ALL
    SELECT id FROM {schema}.runs WHERE workflow_id = %(workflow_id)s AND parked = 'workflow'
), woken AS (
    UPDATE {schema}.runs SET parked = NULL, due_at = %(now)s, updated_at = %(now)s
    WHERE id IN (SELECT id FROM parked)
    RETURNING id
)
SELECT CASE WHEN count(*) > 0 THEN pg_notify(%(wake_channel)s, '') END AS wake FROM woken

-- name: workflow_settings
-- The run defaults of one registered workflow.
SELECT settings FROM {schema}.workflows WHERE id = %(id)s

-- name: workflow_steps
-- The static step list of one registered workflow.
SELECT steps FROM {schema}.workflows WHERE id = %(id)s

-- name: insert_run
-- Insert a new run; nothing when its id or idempotency key already exists (RETURNING tells).
INSERT INTO {schema}.runs (
    id, workflow_id, resource_id, status, input, output, error, current_step_id,
    waiting_step_id, waiting_kind, waiting_event, waiting_wake_at, wake_at, due_at, held,
    retry_count, max_retries, retry_backoff, idempotency_key, created_at, updated_at, paused_at,
    resumed_at, completed_at, timeout_at, lease_owner, lease_token, lease_expires_at, mailbox_seq,
    parent_run_id, parent_step_id, priority, concurrency_key, slot_held, parked, trace_context
) VALUES (
    %(id)s, %(workflow_id)s, %(resource_id)s, %(status)s, %(input)s, %(output)s, %(error)s,
    %(current_step_id)s, %(waiting_step_id)s, %(waiting_kind)s, %(waiting_event)s,
    %(waiting_wake_at)s, %(wake_at)s, %(due_at)s, %(held)s, %(retry_count)s, %(max_retries)s,
    %(retry_backoff)s, %(idempotency_key)s, %(created_at)s, %(updated_at)s, %(paused_at)s,
    %(resumed_at)s, %(completed_at)s, %(timeout_at)s, %(lease_owner)s, %(lease_token)s,
    %(lease_expires_at)s, %(mailbox_seq)s, %(parent_run_id)s, %(parent_step_id)s, %(priority)s,
    %(concurrency_key)s, %(slot_held)s, %(parked)s, %(trace_context)s
)
ON CONFLICT DO NOTHING
RETURNING id

-- name: start_run
-- A new run, one statement: insert_run (embedded as {insert_run}, the one copy of the insert), and
-- when the row went in, wake the workers (so the run and its wake-up commit together); no row when
-- its id or idempotency key already exists. Not announced on the runs channel: nobody waits for a
-- run that did not exist yet (locked.insert_run).
WITH inserted AS (
    {insert_run}
)
SELECT id, pg_notify(%(wake_channel)s, '') AS wake
FROM inserted

-- name: run_by_key
-- The run holding an idempotency key.
SELECT * FROM {schema}.runs WHERE idempotency_key = %(key)s

-- name: get_run
-- One run, without locking it.
SELECT * FROM {schema}.runs WHERE id = %(id)s

-- name: get_run_with_steps
-- One run and its step records (a json array in execution order), one statement: one round trip and
-- one snapshot (the run and its timeline as they were at the same moment).
SELECT r.*,
    (SELECT json_agg(s ORDER BY s.seq, s.pos) FROM {schema}.steps AS s WHERE s.run_id = r.id) AS step_rows
FROM {schema}.runs AS r WHERE r.id = %(id)s

-- name: lock_run
-- One run, locked for the rest of the transaction (every status change starts here).
SELECT * FROM {schema}.runs WHERE id = %(id)s FOR UPDATE

-- name: lock_children
-- A run's children that have not ended, locked (cancelling a run cancels them).
SELECT * FROM {schema}.runs
WHERE parent_run_id = %(id)s AND status NOT IN ('completed', 'failed', 'cancelled')
ORDER BY id
FOR UPDATE

-- name: update_run
-- Write back every column of a locked run, as a pure transition computed it (but priority,
-- concurrency_key and trace_context, which no transition changes: they are set when the run is
-- started; trace_context is the trace context current then).
UPDATE {schema}.runs SET
    status = %(status)s, output = %(output)s, error = %(error)s,
    current_step_id = %(current_step_id)s, waiting_step_id = %(waiting_step_id)s,
    waiting_kind = %(waiting_kind)s, waiting_event = %(waiting_event)s,
    waiting_wake_at = %(waiting_wake_at)s, wake_at = %(wake_at)s, due_at = %(due_at)s,
    held = %(held)s, retry_count = %(retry_count)s, max_retries = %(max_retries)s,
    retry_backoff = %(retry_backoff)s, updated_at = %(updated_at)s, paused_at = %(paused_at)s,
    resumed_at = %(resumed_at)s, completed_at = %(completed_at)s, timeout_at = %(timeout_at)s,
    lease_owner = %(lease_owner)s, lease_token = %(lease_token)s,
    lease_expires_at = %(lease_expires_at)s, mailbox_seq = %(mailbox_seq)s,
    slot_held = %(slot_held)s, parked = %(parked)s
WHERE id = %(id)s

-- name: run_steps
-- A run's step records in execution order.
SELECT * FROM {schema}.steps WHERE run_id = %(run_id)s ORDER BY seq, pos

-- name: run_step
-- One step record of a run.
SELECT * FROM {schema}.steps WHERE run_id = %(run_id)s AND step_id = %(step_id)s

-- name: steps_of_runs
-- The step records of several runs, in execution order.
SELECT * FROM {schema}.steps WHERE run_id = ANY(%(run_ids)s) ORDER BY seq, pos

-- name: mailbox_of_runs
-- The unconsumed events of several runs, oldest first.
SELECT * FROM {schema}.events
WHERE run_id = ANY(%(run_ids)s) AND consumed_by_step IS NULL
ORDER BY id

-- name: unconsumed_names
-- The distinct names of a run's unconsumed events.
SELECT DISTINCT name FROM {schema}.events WHERE run_id = %(run_id)s AND consumed_by_step IS NULL

-- name: insert_event
-- Put an event in a run's mailbox.
INSERT INTO {schema}.events (run_id, name, data, created_at)
VALUES (%(run_id)s, %(name)s, %(data)s, %(now)s)

-- name: deliver_event
-- trigger_event in one statement (locked.deliver_event otherwise takes a locked transaction of two
-- round trips): lock the live run (of the resource, when given), count the event in mailbox_seq and,
-- when the run is paused at a WaitFor for this event (not held), wake it as transitions.deliver_event
-- does (transitions._settle with the event ready: running while a worker's lease is active, else
-- pending, due now, its wait and lease cleared), with limits.settled's parked rule; insert the
-- event; notify as locked.save does (runs: the status changed; wake: due, and changed); return the
-- run as written, with its step records (trigger_event returns them: no read after). No row: the
-- run is missing, of another resource or ended, and the caller takes the locked path for its error.
WITH run AS (
    SELECT id, status, due_at,  -- coalesce: a NULL here (a run paused with no wait) would wake it
        coalesce(NOT held AND status = 'paused' AND waiting_kind = 'wait_for' AND waiting_event = %(event)s,
                 false) AS wakes,
        coalesce(lease_owner IS NOT NULL AND lease_expires_at > %(now)s, false) AS leased
    FROM {schema}.runs
    WHERE id = %(run_id)s AND (%(resource_id)s::text IS NULL OR resource_id = %(resource_id)s::text)
      AND status NOT IN ('completed', 'failed', 'cancelled')
    FOR UPDATE
), woken AS (
    SELECT *, wakes AND NOT leased AS freed FROM run
), updated AS (
    UPDATE {schema}.runs AS r
    SET mailbox_seq = r.mailbox_seq + 1, updated_at = %(now)s,
        status = CASE WHEN NOT w.wakes THEN r.status WHEN w.leased THEN 'running' ELSE 'pending' END,
        due_at = CASE WHEN NOT w.wakes THEN r.due_at WHEN w.leased THEN NULL ELSE %(now)s END,
        lease_owner = CASE WHEN w.freed THEN NULL ELSE r.lease_owner END,
        lease_expires_at = CASE WHEN w.freed THEN NULL ELSE r.lease_expires_at END,
        waiting_step_id = CASE WHEN w.freed THEN NULL ELSE r.waiting_step_id END,
        waiting_kind = CASE WHEN w.freed THEN NULL ELSE r.waiting_kind END,
        waiting_event = CASE WHEN w.freed THEN NULL ELSE r.waiting_event END,
        waiting_wake_at = CASE WHEN w.freed THEN NULL ELSE r.waiting_wake_at END,
        wake_at = CASE WHEN w.freed THEN NULL ELSE r.wake_at END,
        parked = CASE WHEN r.parked IS NOT NULL AND (r.held OR (CASE WHEN NOT w.wakes THEN r.due_at
                      WHEN w.leased THEN NULL ELSE %(now)s END) IS DISTINCT FROM r.timeout_at)
                      THEN NULL ELSE r.parked END
    FROM woken AS w WHERE r.id = w.id
    RETURNING r.*, w.status AS old_status, w.due_at AS old_due
), inserted AS (
    INSERT INTO {schema}.events (run_id, name, data, created_at)
    SELECT id, %(event)s, %(data)s, %(now)s FROM updated
)
SELECT u.*,
    (SELECT json_agg(s ORDER BY s.seq, s.pos) FROM {schema}.steps AS s WHERE s.run_id = u.id) AS step_rows,
    CASE WHEN u.status <> u.old_status THEN pg_notify(%(runs_channel)s, u.id) END AS announced,
    CASE WHEN u.due_at IS NOT NULL AND (u.due_at IS DISTINCT FROM u.old_due OR u.status <> u.old_status)
         THEN pg_notify(%(wake_channel)s, '') END AS woke
FROM updated AS u

-- name: consume_events
-- Mark mailbox events as consumed by the WaitFor steps that took them.
UPDATE {schema}.events AS e SET consumed_by_step = c.step_id, consumed_at = %(now)s
FROM unnest(%(ids)s::bigint[], %(step_ids)s::text[]) AS c(id, step_id)
WHERE e.id = c.id AND e.run_id = %(run_id)s

-- name: delete_steps
-- Delete step records of a run (a retried attempt left their path, or retry_workflow re-drives them).
DELETE FROM {schema}.steps WHERE run_id = %(run_id)s AND step_id = ANY(%(step_ids)s::text[])

-- name: release_events
-- The events taken by these step records go back to the mailbox (unconsumed); returns their names.
UPDATE {schema}.events SET consumed_by_step = NULL, consumed_at = NULL
WHERE run_id = %(run_id)s AND consumed_by_step = ANY(%(step_ids)s::text[])
RETURNING name

-- name: upsert_steps
-- Insert or replace a run's step records (a json array, in order); each carries its seq.
-- The one copy of the step upsert: the commit queries embed it as {upsert_steps}, after their
-- fenced `run` CTE, with {only_if} = the `run` CTE matched (nothing is written without the lease)
-- and the record is not a running one of a held run.
INSERT INTO {schema}.steps AS s (
    run_id, step_id, kind, status, output, error, timed_out, attempts, started_at, completed_at,
    wake_at, timeout_at, event, run_attempt, seq, interrupted
)
SELECT %(run_id)s, r.step_id, r.kind, r.status, r.output, r.error, r.timed_out, r.attempts,
       r.started_at, r.completed_at, r.wake_at, r.timeout_at, r.event, r.run_attempt, r.seq,
       r.interrupted
FROM json_array_elements(%(steps)s::json) WITH ORDINALITY AS e(rec, ord),
     json_to_record(e.rec) AS r(
         step_id text, kind text, status text, output json, error jsonb, timed_out boolean,
         attempts integer, started_at timestamptz, completed_at timestamptz, wake_at timestamptz,
         timeout_at timestamptz, event text, run_attempt integer, seq integer, interrupted integer)
WHERE {only_if}
ORDER BY e.ord
ON CONFLICT (run_id, step_id) DO UPDATE SET
    kind = excluded.kind, status = excluded.status, output = excluded.output,
    error = excluded.error, timed_out = excluded.timed_out, attempts = excluded.attempts,
    started_at = excluded.started_at, completed_at = excluded.completed_at,
    wake_at = excluded.wake_at, timeout_at = excluded.timeout_at, event = excluded.event,
    run_attempt = excluded.run_attempt, seq = excluded.seq, interrupted = excluded.interrupted

-- name: commit_keep_running
-- Hot path, one statement: if the lease is still ours (token, owner, not ended, not expired at
-- now), renew it when it expires before renew_floor (transitions.renewed_lease: heartbeats keep it
-- after that, so the row usually keeps every indexed column and is updated in place), upsert the
-- batch's step records and mark the mailbox events its WaitFor steps took as consumed (empty arrays
-- when none); returns held, or no row when the lease is lost. A run paused meanwhile starts nothing
-- further: the batch's running records are not written then, and the run stays at the last step
-- that finished (transitions.batch_writes / apply_batch).
WITH run AS (
    UPDATE {schema}.runs
    SET lease_expires_at = CASE WHEN lease_expires_at >= %(renew_floor)s THEN lease_expires_at
                                ELSE %(lease_expires_at)s END,
        updated_at = %(now)s,
        current_step_id = coalesce(
            CASE WHEN held THEN %(finished_step_id)s::text ELSE %(current_step_id)s::text END,
            current_step_id)
    WHERE id = %(run_id)s AND lease_token = %(token)s AND lease_owner = %(owner)s
      AND status NOT IN ('completed', 'failed', 'cancelled') AND lease_expires_at > %(now)s
    RETURNING held
), written AS (
    {upsert_steps}
), consumed AS (
    UPDATE {schema}.events AS e SET consumed_by_step = c.step_id, consumed_at = %(now)s
    FROM run, unnest(%(event_ids)s::bigint[], %(event_steps)s::text[]) AS c(id, step_id)
    WHERE e.id = c.id AND e.run_id = %(run_id)s
)
SELECT held FROM run

-- name: commit_complete
-- Hot path for a run that completes, one statement: if the lease is still ours and the run has no
-- parent (whose Child step would need settling), record the batch's step records and consumed
-- events, complete the run as transitions.apply_outcome does for CompleteRun (lease released) and
-- notify its status change. No row: lease lost, a child run, or a run holding a place under its
-- workflow's concurrency limits (the caller takes the locked path, which frees the place).
WITH run AS (
    UPDATE {schema}.runs
    SET status = 'completed', output = %(output)s, error = NULL, completed_at = %(now)s,
        updated_at = %(now)s, current_step_id = coalesce(%(current_step_id)s::text, current_step_id),
        waiting_step_id = NULL, waiting_kind = NULL, waiting_event = NULL, waiting_wake_at = NULL,
        wake_at = NULL, due_at = NULL, held = false, lease_owner = NULL, lease_expires_at = NULL
    WHERE id = %(run_id)s AND lease_token = %(token)s AND lease_owner = %(owner)s
      AND status NOT IN ('completed', 'failed', 'cancelled') AND lease_expires_at > %(now)s
      AND parent_run_id IS NULL AND NOT slot_held
    RETURNING id, held
), written AS (
    {upsert_steps}
), consumed AS (
    UPDATE {schema}.events AS e SET consumed_by_step = c.step_id, consumed_at = %(now)s
    FROM run, unnest(%(event_ids)s::bigint[], %(event_steps)s::text[]) AS c(id, step_id)
    WHERE e.id = c.id AND e.run_id = %(run_id)s
)
SELECT pg_notify(%(channel)s, id) FROM run

-- name: claim
-- Claim, in one statement, up to limit claimable runs of the given workflows (none of them with
-- concurrency limits: see claim_limited), skipping runs another transaction holds: first runs whose
-- lease expired (a crashed worker's, oldest expiry first, read in runs_lease_idx order), so a takeover
-- never waits behind a backlog; then ready runs (due, no lease), highest priority first, then earliest
-- due: `levels` finds the distinct priorities of claimable-or-waiting runs, highest first, with one
-- index probe each (a loose scan of runs_ready_idx), and each level's due runs are read in due order
-- from the same index, so neither a backlog nor the runs waiting on timers is sorted or scanned on
-- every claim. Each run is leased as transitions.claim does (running and no longer waiting, or
-- paused as it was when held; a new lease token; no longer due) and returned with its step records
-- and unconsumed mailbox as json arrays. A run whose status changed (pending to running) is
-- announced on the runs channel, for wait_for_run(until=["running"]).
-- Those arrays come from the statement's snapshot, but a row changed by a commit between that
-- snapshot and the row lock is locked (and returned) in its newest version: snapshot_current is
-- false then (the row's xmin moved), and the caller reads steps and mailbox again.
-- claim_due is when each run became claimable (its due time, or its lease's expiry), for the
-- pgflow.claim.delay metric (due_at is NULL once claimed).
-- The claim commits without waiting for its WAL flush (synchronous_commit off for this statement's
-- transaction only: set_config(..., true)). Nothing runs on a claim alone: the worker's next write
-- (the first step's running record, a completion, a Transaction step) is a synchronous commit,
-- fenced by the new lease token, and flushing it flushes the claim before it. A claim lost with a
-- server crash leaves the run as it was, and that next commit fails on the token (lease lost), so
-- no step runs on a lease the database forgot. It saves the claim a disk flush (~0.3 ms).
-- {limit} is the limit written as a literal (ops.claim), not a parameter: a generic plan would
-- assume LIMIT $n returns a tenth of the rows, cost itself far above the custom plans once the
-- table is large and never be used, so every claim would be planned again (most of its server
-- time with a million runs); with the limit in the text, PostgreSQL keeps the prepared plan.
WITH RECURSIVE expired AS (
    SELECT id, 0 AS rank, 0 AS priority, lease_expires_at AS due, created_at, xmin AS locked_xmin,
        status AS old_status
    FROM {schema}.runs
    WHERE workflow_id = ANY(%(workflow_ids)s) AND lease_owner IS NOT NULL
      AND lease_expires_at <= %(now)s AND status NOT IN ('completed', 'failed', 'cancelled')
    ORDER BY lease_expires_at, created_at, id
    LIMIT {limit}
    FOR UPDATE SKIP LOCKED
), levels AS (
    (SELECT priority FROM {schema}.runs
     WHERE status IN ('pending', 'paused') AND due_at IS NOT NULL
     ORDER BY priority DESC LIMIT 1)
    UNION ALL
    SELECT (SELECT r.priority FROM {schema}.runs AS r
            WHERE r.status IN ('pending', 'paused') AND r.due_at IS NOT NULL AND r.priority < levels.priority
            ORDER BY r.priority DESC LIMIT 1)
    FROM levels WHERE levels.priority IS NOT NULL
), ready AS (
    SELECT level.* FROM levels CROSS JOIN LATERAL (
        SELECT id, 1 AS rank, priority, due_at AS due, created_at, xmin AS locked_xmin, status AS old_status
        FROM {schema}.runs
        WHERE priority = levels.priority AND workflow_id = ANY(%(workflow_ids)s)
          AND status IN ('pending', 'paused') AND lease_owner IS NULL AND due_at <= %(now)s
        ORDER BY due_at, created_at, id
        LIMIT {limit}
        FOR UPDATE SKIP LOCKED
    ) AS level
    WHERE levels.priority IS NOT NULL
), picked AS (
    SELECT * FROM expired UNION ALL SELECT * FROM ready
    ORDER BY rank, priority DESC, due, created_at, id
    LIMIT {limit}
), claimed AS (
    UPDATE {schema}.runs AS r
    SET status = CASE WHEN r.held THEN 'paused' ELSE 'running' END, lease_owner = %(owner)s,
        lease_token = r.lease_token + 1, lease_expires_at = %(lease_expires_at)s, due_at = NULL,
        updated_at = %(now)s, parked = NULL,
        waiting_step_id = CASE WHEN r.held THEN r.waiting_step_id END,
        waiting_kind = CASE WHEN r.held THEN r.waiting_kind END,
        waiting_event = CASE WHEN r.held THEN r.waiting_event END,
        waiting_wake_at = CASE WHEN r.held THEN r.waiting_wake_at END,
        wake_at = CASE WHEN r.held THEN r.wake_at END
    FROM picked WHERE r.id = picked.id
    RETURNING r.*
)
SELECT c.*,
    (SELECT json_agg(s ORDER BY s.seq, s.pos) FROM {schema}.steps AS s WHERE s.run_id = c.id) AS step_rows,
    (SELECT json_agg(e ORDER BY e.id) FROM {schema}.events AS e
     WHERE e.run_id = c.id AND e.consumed_by_step IS NULL) AS mailbox_rows,
    p.locked_xmin = (SELECT x.xmin FROM {schema}.runs AS x WHERE x.id = c.id) AS snapshot_current,
    CASE WHEN c.status <> p.old_status THEN pg_notify(%(runs_channel)s, c.id) END AS announced,
    p.due AS claim_due,
    set_config('synchronous_commit', 'off', true) AS async_commit
FROM claimed AS c JOIN picked AS p ON p.id = c.id
ORDER BY p.rank, p.priority DESC, p.due, p.created_at, p.id

-- name: lock_limits
-- The limited claim, first statement of its transaction: lock the rows of the workflows whose runs
-- it claims (in id order) and read their concurrency limits. Claims of a limited workflow, and the
-- wake-ups of its parked runs (unpark), are serialised by this lock, so the places counted by the
-- next statements cannot change before the claim commits.
SELECT id, concurrency, key_concurrency FROM {schema}.workflows
WHERE id = ANY(%(workflow_ids)s) AND (concurrency IS NOT NULL OR key_concurrency IS NOT NULL)
ORDER BY id
FOR UPDATE

-- name: slots_in_use
-- Places in use per workflow and concurrency key: runs holding one (runs_slots_idx).
SELECT workflow_id, concurrency_key, count(*) AS n FROM {schema}.runs
WHERE workflow_id = ANY(%(workflow_ids)s) AND slot_held
GROUP BY workflow_id, concurrency_key

-- name: expired_candidates
-- The limited claim's candidates whose lease expired, locked (as in claim).
SELECT * FROM {schema}.runs
WHERE workflow_id = ANY(%(workflow_ids)s) AND lease_owner IS NOT NULL
  AND lease_expires_at <= %(now)s AND status NOT IN ('completed', 'failed', 'cancelled')
ORDER BY lease_expires_at, created_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: ready_candidates
-- The limited claim's ready candidates, highest priority first, then earliest due, locked: limit
-- plus some, so that the runs the limits hold back are parked in the same claim (limits.admit).
SELECT * FROM {schema}.runs
WHERE workflow_id = ANY(%(workflow_ids)s) AND status IN ('pending', 'paused') AND lease_owner IS NULL
  AND due_at <= %(now)s
ORDER BY priority DESC, due_at, created_at, id
LIMIT %(limit)s
FOR UPDATE SKIP LOCKED

-- name: park_runs
-- Runs the limits held back: pending, not due until a place frees (unpark) or, at the latest, until
-- their workflow timeout (then a claim takes them, without a place, to be failed).
UPDATE {schema}.runs AS r SET parked = p.why, due_at = r.timeout_at, updated_at = %(now)s
FROM unnest(%(ids)s::text[], %(whys)s::text[]) AS p(id, why)
WHERE r.id = p.id

-- name: claim_ids
-- The limited claim's last statement: lease the admitted runs (locked by the candidate queries) as
-- claim does, the runs that take a place (limits.takes_place: placed) holding it, and return them with
-- their step records and mailbox (read under the row locks, so current). No claim_due: the caller
-- has each run's due time (or lease expiry) from its candidate row. Its transaction commits without
-- waiting for its WAL flush, as the plain claim does (see claim: nothing runs on a claim alone).
WITH claimed AS (
    UPDATE {schema}.runs AS r
    SET status = CASE WHEN r.held THEN 'paused' ELSE 'running' END, lease_owner = %(owner)s,
        lease_token = r.lease_token + 1, lease_expires_at = %(lease_expires_at)s, due_at = NULL,
        updated_at = %(now)s, parked = NULL,
        slot_held = r.slot_held OR r.id = ANY(%(placed)s),
        waiting_step_id = CASE WHEN r.held THEN r.waiting_step_id END,
        waiting_kind = CASE WHEN r.held THEN r.waiting_kind END,
        waiting_event = CASE WHEN r.held THEN r.waiting_event END,
        waiting_wake_at = CASE WHEN r.held THEN r.waiting_wake_at END,
        wake_at = CASE WHEN r.held THEN r.wake_at END
    WHERE r.id = ANY(%(ids)s)
    RETURNING r.*
)
SELECT c.*,
    (SELECT json_agg(s ORDER BY s.seq, s.pos) FROM {schema}.steps AS s WHERE s.run_id = c.id) AS step_rows,
    (SELECT json_agg(e ORDER BY e.id) FROM {schema}.events AS e
     WHERE e.run_id = c.id AND e.consumed_by_step IS NULL) AS mailbox_rows,
    true AS snapshot_current,
    set_config('synchronous_commit', 'off', true) AS async_commit
FROM claimed AS c

-- name: share_limits
-- A run that held a place ended (FreePlace), first statement: lock its workflow's row, shared —
-- serialised with the workflow's claims (lock_limits), not with other ends — so that unpark, a later
-- statement, sees every run a claim parked before this end.
SELECT id FROM {schema}.workflows WHERE id = %(workflow_id)s FOR SHARE

-- name: unpark
-- Then wake the best run parked on the ended run's key and the best parked on its workflow
-- (limits.to_wake): due now, no longer parked. A parked run another transaction holds is waited for,
-- never skipped: a client operation on it (lock_run) leaves it parked, so skipping it would give the
-- place to a later run or, with none parked, to nobody (the parked run never woken). When the holder
-- is another end that woke it, the row no longer matches once that end commits, and the next best
-- is taken (rows that fail the recheck do not count for LIMIT).
WITH on_key AS (
    SELECT id FROM {schema}.runs
    WHERE workflow_id = %(workflow_id)s AND parked = 'key' AND concurrency_key = %(key)s
    ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE
), on_workflow AS (
    SELECT id FROM {schema}.runs
    WHERE workflow_id = %(workflow_id)s AND parked = 'workflow'
    ORDER BY priority DESC, created_at, id LIMIT 1 FOR UPDATE
)
UPDATE {schema}.runs AS r SET parked = NULL, due_at = %(now)s, updated_at = %(now)s
WHERE r.id IN (SELECT id FROM on_key UNION ALL SELECT id FROM on_workflow)

-- name: heartbeat
-- Extend every lease still held (token and owner match, not ended, not expired); returns the ids
-- of the runs whose lease was lost while they are still live (taken over, or expired): a run that
-- ended meanwhile (its worker completed it) is not reported.
WITH leases AS (
    SELECT * FROM unnest(%(ids)s::text[], %(owners)s::text[], %(tokens)s::bigint[]) AS l(id, owner, token)
), kept AS (
    UPDATE {schema}.runs AS r SET lease_expires_at = %(lease_expires_at)s
    FROM leases AS l
    WHERE r.id = l.id AND r.lease_owner = l.owner AND r.lease_token = l.token
      AND r.status NOT IN ('completed', 'failed', 'cancelled') AND r.lease_expires_at > %(now)s
    RETURNING r.id, r.lease_owner AS owner, r.lease_token AS token
)
SELECT l.id FROM leases AS l JOIN {schema}.runs AS r ON r.id = l.id
WHERE r.status NOT IN ('completed', 'failed', 'cancelled')
  AND NOT EXISTS (SELECT FROM kept AS k WHERE k.id = l.id AND k.owner = l.owner AND k.token = l.token)

-- name: next_due
-- When a run of these workflows next becomes claimable: earliest due time of an unleased run,
-- or lease expiry of a leased one (NULL when nothing is scheduled).
SELECT least(
    (SELECT min(due_at) FROM {schema}.runs
     WHERE workflow_id = ANY(%(workflow_ids)s) AND status IN ('pending', 'paused')
       AND lease_owner IS NULL),
    (SELECT min(lease_expires_at) FROM {schema}.runs
     WHERE workflow_id = ANY(%(workflow_ids)s) AND lease_owner IS NOT NULL
       AND status NOT IN ('completed', 'failed', 'cancelled'))
) AS due

-- name: cursor_run
-- The paging key (created_at, id) of a cursor run; with a resource_id, only a run of that resource
-- (a cursor naming another tenant's run is as unknown as a missing one).
SELECT created_at, id FROM {schema}.runs
WHERE id = %(id)s AND (%(resource_id)s::text IS NULL OR resource_id = %(resource_id)s::text)

-- name: list_runs_desc
-- A page of runs, newest first, after the optional cursor condition in {filters}.
SELECT * FROM {schema}.runs WHERE {filters} ORDER BY created_at DESC, id DESC LIMIT %(limit)s

-- name: list_runs_asc
-- A page of runs, oldest first (walking back towards newer runs with ending_before).
SELECT * FROM {schema}.runs WHERE {filters} ORDER BY created_at, id LIMIT %(limit)s

-- name: notify
-- Send notifications (channel, payload) when the transaction commits.
SELECT pg_notify(n.channel, n.payload)
FROM unnest(%(channels)s::text[], %(payloads)s::text[]) AS n(channel, payload)

-- name: consumed_events
-- The events of a run already consumed, with the WaitFor step that took each.
SELECT id, consumed_by_step FROM {schema}.events
WHERE run_id = %(run_id)s AND consumed_by_step IS NOT NULL
ORDER BY id

-- ------------------------------------------------------------------------------------------------
-- Reads for the dashboard: counts by status, registered workflows, a run's mailbox and children.

-- name: count_runs
-- How many runs have each status, under the optional filters in {filters} (workflow, resource).
SELECT status, count(*) AS n FROM {schema}.runs WHERE {filters} GROUP BY status

-- name: list_workflows
-- Every registered workflow (id, static step list, registration time), by id in byte order.
SELECT id, steps, registered_at FROM {schema}.workflows ORDER BY id COLLATE "C"

-- name: run_scope
-- A run's resource, to check the caller's scope before reading its mailbox or its children.
SELECT resource_id FROM {schema}.runs WHERE id = %(id)s

-- name: child_runs
-- A run's child runs, oldest first (runs_parent_idx).
SELECT * FROM {schema}.runs WHERE parent_run_id = %(id)s ORDER BY created_at, id

-- ------------------------------------------------------------------------------------------------
-- Retention (SPEC §15): deleting terminal runs that ended long ago, in batches.

-- name: prune_runs
-- One batch of retention, one statement (its own transaction): delete at most %(limit)s terminal
-- runs with a status in %(statuses)s that ended before %(cutoff)s (of one workflow / resource when
-- given), oldest end first (runs_ended_idx); their steps and events go with them (ON DELETE
-- CASCADE). A run goes only when its parent, if still there, has ended, and when no child run of its
-- own is left (children go first, the parent in a later batch). Rows locked by others are skipped.
-- With a %(lock_key)s, only when that advisory lock is free (one pruning engine per schema): `open`
-- says whether it was.
WITH gate AS MATERIALIZED (
    SELECT CASE WHEN %(lock_key)s::bigint IS NULL THEN true
                ELSE pg_try_advisory_xact_lock(%(lock_key)s::bigint) END AS open
), batch AS (
    SELECT r.id FROM {schema}.runs AS r
    WHERE (SELECT open FROM gate)
      AND r.status IN ('completed', 'failed', 'cancelled') AND r.status = ANY(%(statuses)s::text[])
      AND r.completed_at < %(cutoff)s
      AND (%(workflow_id)s::text IS NULL OR r.workflow_id = %(workflow_id)s::text)
      AND (%(resource_id)s::text IS NULL OR r.resource_id = %(resource_id)s::text)
      AND NOT EXISTS (SELECT FROM {schema}.runs AS p WHERE p.id = r.parent_run_id
                      AND p.status NOT IN ('completed', 'failed', 'cancelled'))
      AND NOT EXISTS (SELECT FROM {schema}.runs AS c WHERE c.parent_run_id = r.id)
    ORDER BY r.completed_at, r.id
    LIMIT %(limit)s
    FOR UPDATE OF r SKIP LOCKED
), gone AS (
    -- by primary key (an array, not a join: a join may scan the whole table for each batch)
    DELETE FROM {schema}.runs AS d WHERE d.id = ANY(ARRAY(SELECT id FROM batch)) RETURNING d.id
)
SELECT (SELECT open FROM gate) AS open, (SELECT count(*) FROM gone) AS deleted

-- name: count_prunable
-- How many runs prune_runs, batch after batch, would delete now: those it selects whose parent has
-- not ended are kept, and so is every ancestor of a run it does not select (`kept`, walked up the
-- parent links), since a parent waits for its children to go first.
WITH RECURSIVE kept(id) AS (
    SELECT c.parent_run_id FROM {schema}.runs AS c
    WHERE c.parent_run_id IS NOT NULL AND (
        c.status IN ('completed', 'failed', 'cancelled') AND c.status = ANY(%(statuses)s::text[])
        AND c.completed_at < %(cutoff)s
        AND (%(workflow_id)s::text IS NULL OR c.workflow_id = %(workflow_id)s::text)
        AND (%(resource_id)s::text IS NULL OR c.resource_id = %(resource_id)s::text)
    ) IS NOT TRUE
    UNION
    SELECT p.parent_run_id FROM {schema}.runs AS p JOIN kept ON p.id = kept.id
    WHERE p.parent_run_id IS NOT NULL
)
SELECT count(*) AS n FROM {schema}.runs AS r
WHERE r.status IN ('completed', 'failed', 'cancelled') AND r.status = ANY(%(statuses)s::text[])
  AND r.completed_at < %(cutoff)s
  AND (%(workflow_id)s::text IS NULL OR r.workflow_id = %(workflow_id)s::text)
  AND (%(resource_id)s::text IS NULL OR r.resource_id = %(resource_id)s::text)
  AND NOT EXISTS (SELECT FROM {schema}.runs AS p WHERE p.id = r.parent_run_id
                  AND p.status NOT IN ('completed', 'failed', 'cancelled'))
  AND NOT EXISTS (SELECT FROM kept WHERE kept.id = r.id)
-- Schedules (SPEC §16): the operations are schedule_store.py's, the rules schedules.py's.

-- name: lock_schedule
-- One schedule, locked for the rest of the transaction (create or replace, pause, resume, delete).
SELECT * FROM {schema}.schedules WHERE id = %(id)s FOR UPDATE

-- name: lock_due_schedules
-- Up to limit active schedules whose next tick has come at now, earliest first (schedules_due_idx),
-- locked, skipping those another transaction holds (an engine firing them now: the tick starts one
-- run), each with its workflow's registered run defaults.
SELECT s.*, w.settings FROM {schema}.schedules AS s
LEFT JOIN {schema}.workflows AS w ON w.id = s.workflow_id
WHERE NOT s.paused AND s.next_tick_at <= %(now)s
ORDER BY s.next_tick_at, s.id
LIMIT %(limit)s
FOR UPDATE OF s SKIP LOCKED

-- name: write_schedule
-- Insert or replace a schedule, every column as schedules.py computed it.
INSERT INTO {schema}.schedules (
    id, workflow_id, cron, timezone, input, catch_up, paused, next_tick_at, last_tick_at,
    last_run_id, created_at, updated_at
) VALUES (
    %(id)s, %(workflow_id)s, %(cron)s, %(timezone)s, %(input)s, %(catch_up)s, %(paused)s,
    %(next_tick_at)s, %(last_tick_at)s, %(last_run_id)s, %(created_at)s, %(updated_at)s
)
ON CONFLICT (id) DO UPDATE SET
    workflow_id = excluded.workflow_id, cron = excluded.cron, timezone = excluded.timezone,
    input = excluded.input, catch_up = excluded.catch_up, paused = excluded.paused,
    next_tick_at = excluded.next_tick_at, last_tick_at = excluded.last_tick_at,
    last_run_id = excluded.last_run_id, created_at = excluded.created_at,
    updated_at = excluded.updated_at

-- name: delete_schedule
-- Delete a schedule (its runs stay).
DELETE FROM {schema}.schedules WHERE id = %(id)s

-- name: get_schedule
-- One schedule, without locking it.
SELECT * FROM {schema}.schedules WHERE id = %(id)s

-- name: list_schedules
-- Every schedule, by id in byte order.
SELECT * FROM {schema}.schedules ORDER BY id

-- name: runs_by_keys
-- The runs holding these idempotency keys (the tick runs just inserted, or older holders).
SELECT id, idempotency_key FROM {schema}.runs WHERE idempotency_key = ANY(%(keys)s::text[])

-- name: next_schedule_tick
-- The earliest next tick of the active schedules (NULL when there is none).
SELECT min(next_tick_at) AS next FROM {schema}.schedules WHERE NOT paused
