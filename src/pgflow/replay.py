"""The interpreter: workflow + recorded history + ``now`` → the next decision. No I/O.

A :class:`Replayer` drives one run's generator. It feeds recorded outcomes back in (``send`` for
values, ``throw`` for failures) and stops at the first step that needs the outside world:
user code to execute, a wait to suspend on, or the end of the workflow. Records it can settle
by itself (a timer that fired, an event taken from the mailbox) are returned as ``writes`` so the
caller persists them with its next transition. The same Replayer can be kept alive while its run
keeps executing (new outcomes are added with :meth:`Replayer.record`); that is only a cache of
replay-from-scratch, which always gives the same decisions.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Generator, Mapping, Sequence
from typing import Any

import attrs
import pendulum

from . import serde
from . import step_records as records
from .arguments import add_time, id_problem, shown
from .commands import (
    KIND_OF,
    All,
    Child,
    Delay,
    Pause,
    Poll,
    PollResult,
    Run,
    Transaction,
    WaitFor,
    WaitUntil,
)
from .definition import Context, Workflow, WorkflowRef, output_type
from .durations import parse_duration, parse_when
from .errors import (
    ChildFailedError,
    DuplicateStepError,
    InvalidArgumentError,
    InvalidDurationError,
    NonDeterminismError,
    PgflowError,
    SerializationError,
    StepFailedError,
    UnsupportedError,
    WorkflowDefinitionError,
)
from .history import RecordedOrder
from .records import Event, RunError, StepRecord, Waiting
from .step_records import error_of
from .validation import rebuild, to_stored

__all__ = ["Complete", "Decision", "Execute", "Fail", "ReplayInput", "Replayer", "Suspend", "error_of"]

log = logging.getLogger("pgflow.replay")
NON_RETRYABLE: tuple[type[PgflowError], ...] = (
    NonDeterminismError,
    DuplicateStepError,
    SerializationError,
    WorkflowDefinitionError,
    UnsupportedError,
)


@attrs.frozen
class ReplayInput:
    """What the interpreter needs to know about the run itself."""

    run_id: str
    workflow_id: str
    resource_id: str | None
    attempt: int
    input: Any
    min_poll_interval: pendulum.Duration = pendulum.duration(seconds=1)
    supports_transactions: bool = False


@attrs.frozen
class Execute:
    """Run user code for these steps (one, or several for ``All``), then ``record`` each outcome.

    Each step comes with the record to write before its code starts: ``running`` (``attempts`` the
    attempt about to run, ``seq`` its place in the run), from which its outcome is built."""

    steps: tuple[tuple[Run | Poll | Transaction | Child, StepRecord], ...]


@attrs.frozen
class Suspend:
    """Nothing can happen until ``wake_at`` (or an event/resume when it is None)."""

    waiting: Waiting | None
    wake_at: pendulum.DateTime | None


@attrs.frozen
class Complete:
    output: Any


@attrs.frozen
class Fail:
    error: RunError
    retryable: bool


Action = Execute | Suspend | Complete | Fail


@attrs.frozen
class Decision:
    action: Action
    writes: tuple[StepRecord, ...] = ()
    consumed: tuple[tuple[int, str], ...] = ()  # (event id, step id)
    discards: tuple[str, ...] = ()  # step records to delete: a retried attempt left their path


# Evaluating one step command against its record -----------------------------------------------


@attrs.frozen
class _Value:
    value: Any


@attrs.frozen
class _Raise:
    error: BaseException


@attrs.frozen
class _Exec:
    steps: tuple[tuple[Run | Poll | Transaction | Child, StepRecord], ...]


@attrs.frozen
class _Wait:
    waiting: Waiting | None
    wake_at: pendulum.DateTime | None


_Eval = _Value | _Raise | _Exec | _Wait


def _min_time(*times: pendulum.DateTime | None) -> pendulum.DateTime | None:
    present = [t for t in times if t is not None]
    return min(present) if present else None


class _Scratch:
    """Writes and consumed events accumulated during one ``decide`` call."""

    def __init__(self, now: pendulum.DateTime) -> None:
        self.now = now
        self.writes: list[StepRecord] = []
        self.consumed: list[tuple[int, str]] = []


class Replayer:
    """Replays one run's generator against its history; see the module docstring."""

    def __init__(self, workflow: Workflow, run: ReplayInput, history: Mapping[str, StepRecord]) -> None:
        self.workflow = workflow
        self.run = run
        self.history: dict[str, StepRecord] = {
            sid: rec
            for sid, rec in history.items()
            if not (rec.status == "failed" and rec.run_attempt < run.attempt)
        }
        # A failed record of an earlier run attempt is retried, not replayed; when the step is
        # reached again at its place it keeps it (seq). New steps are numbered after every record.
        self._seqs: dict[str, int] = {sid: rec.seq for sid, rec in history.items() if rec.seq}
        self._next_seq = max(self._seqs.values(), default=0) + 1
        # The replay follows the recorded order (SPEC §14); it is replaying while recorded steps
        # remain to be yielded (running ones included: the code before them ran already).
        self._order = RecordedOrder(history, run.attempt)
        self._discarded: list[str] = []  # records the workflow left behind, deleted with the next commit
        self._patch_results: dict[str, bool] = {}
        self._scratch: _Scratch | None = None  # the decide() call in progress (for patch markers)
        self._consumed_ids: set[int] = set()
        self._seen: set[str] = set()
        self._gen: Generator[Any, Any, Any] | None = None
        self._current: Any = None  # the command the generator is stopped at
        self._current_checked = False
        self._finished: Action | None = None
        self.context = self._make_context()

    # public API ------------------------------------------------------------------------------

    @property
    def is_replaying(self) -> bool:
        return self._finished is None and self._order.replaying

    def record(self, rec: StepRecord) -> None:
        """Add an outcome produced outside (executed step, or a store write)."""
        self.history[rec.step_id] = rec

    def close(self) -> None:
        """Discard the generator (its ``finally`` blocks run; what they raise is logged, not raised:
        the run's outcome is decided already)."""
        if self._gen is not None:
            gen, self._gen = self._gen, None
            try:
                gen.close()
            except Exception as exc:
                log.warning("run %s: the workflow's cleanup code raised %r when its generator was closed",
                            self.run.run_id, exc)  # fmt: skip

    def decide(self, now: pendulum.DateTime, mailbox: Sequence[Event] = ()) -> Decision:
        scratch = self._scratch = _Scratch(now)
        try:
            action = self._decide(now, mailbox, scratch)
        finally:
            self._scratch = None
        discards, self._discarded = tuple(self._discarded), []
        return Decision(action, tuple(scratch.writes), tuple(scratch.consumed), discards)

    # driving the generator ---------------------------------------------------------------------

    def _make_context(self) -> Context[Any]:
        value = self.workflow.build_input(self.run.input)
        return Context.create(
            input=value,
            run_id=self.run.run_id,
            workflow_id=self.run.workflow_id,
            resource_id=self.run.resource_id,
            attempt=self.run.attempt,
            replaying=lambda: self.is_replaying,
            step_id=lambda: getattr(self._current, "step_id", None),
            patches=self,
        )

    def _decide(self, now: pendulum.DateTime, mailbox: Sequence[Event], scratch: _Scratch) -> Action:
        if self._finished is not None:
            return self._finished
        if self._gen is None:
            started = self._begin()
            if started is not None:
                return self._finish(started)
        while True:
            problem = self._check(self._current)
            if problem is not None:
                return self._finish(problem)
            try:
                outcome = self._evaluate(self._current, now, mailbox, scratch)
            except _Abort as abort:
                return self._finish(abort.action)
            if isinstance(outcome, _Exec | _Wait):
                return self._pending(outcome)
            ended = self._feed(outcome)
            if ended is not None:
                return self._finish(ended)

    def _begin(self) -> Action | None:
        try:
            self._gen = self.workflow.fn(self.context)
            self._yielded(next(self._gen))
        except StopIteration as stop:
            return self._complete(stop.value)
        except Exception as exc:
            return self._failure(exc)
        return None

    def _feed(self, outcome: _Value | _Raise) -> Action | None:
        assert self._gen is not None
        try:
            if isinstance(outcome, _Value):
                self._yielded(self._gen.send(outcome.value))
            else:
                self._yielded(self._gen.throw(outcome.error))
        except StopIteration as stop:
            return self._complete(stop.value)
        except Exception as exc:
            return self._failure(exc)
        return None

    def _yielded(self, command: Any) -> None:
        self._current = command
        self._current_checked = False

    def _finish(self, action: Action) -> Action:
        self._finished = action
        return action

    def _complete(self, value: Any) -> Action:
        left = self._order.returned()
        self._take_discards()
        if left is not None:
            msg = (
                f"run {self.run.run_id}: the workflow returned, but the recorded step {_recorded(left)} "
                "was still to be replayed: workflow code changed under a run in flight (or decides with "
                "something other than step results); use ctx.patched() to change code safely"
            )
            return Fail(error_of(NonDeterminismError(msg), left.step_id), retryable=False)
        try:
            return Complete(serde.to_json(value))
        except SerializationError as exc:
            msg = (
                f"output of run {self.run.run_id} (workflow {self.run.workflow_id!r}) cannot be stored: {exc}"
            )
            return Fail(error_of(SerializationError(msg)), retryable=False)

    def _failure(self, exc: Exception) -> Action:
        if isinstance(exc, InvalidArgumentError | InvalidDurationError):
            # a command or Retry built with a bad argument inside the workflow: a definition mistake
            exc = WorkflowDefinitionError(f"workflow {self.run.workflow_id!r} (run {self.run.run_id}): {exc}")
        retryable = not isinstance(exc, NON_RETRYABLE)
        return Fail(error_of(exc, getattr(self._current, "step_id", None)), retryable)

    @staticmethod
    def _pending(outcome: _Exec | _Wait) -> Action:
        if isinstance(outcome, _Exec):
            return Execute(outcome.steps)
        return Suspend(outcome.waiting, outcome.wake_at)

    # validating yielded commands ---------------------------------------------------------------

    def _check(self, command: Any) -> Action | None:
        """Validate a freshly yielded command: type, step ids, duplicates, determinism."""
        if self._current_checked:
            return None
        parts = command.commands if isinstance(command, All) else (command,)
        if not parts or any(type(c) not in KIND_OF for c in parts):
            what = type(command).__name__
            return self._definition_error(f"workflow yielded {what!r}; yield a step command such as Run(...)")
        for cmd in parts:
            problem = self._check_step(cmd)
            if problem is not None:
                return problem
        self._current_checked = True
        return None

    def _check_step(self, cmd: Any) -> Action | None:
        sid = cmd.step_id
        problem = id_problem(sid)
        if problem is not None:
            return self._definition_error(f"invalid step id ({problem}): {shown(sid)}")
        if sid in self._seen:
            msg = f"run {self.run.run_id} yielded step id {sid!r} twice; step ids must be unique within a run"
            return Fail(error_of(DuplicateStepError(msg), sid), retryable=False)
        self._seen.add(sid)
        kind = KIND_OF[type(cmd)]
        self._order.follow(sid, kind, cmd.event if kind == "wait_for" else None)
        if self._order.dropped or self._order.skipped:
            self._take_discards()
        if self._order.diverged is not None:
            return self._diverged(self._order.diverged, _yielded(cmd))
        return None

    def _diverged(self, expected: StepRecord, yielded: str) -> Action:
        msg = (
            f"run {self.run.run_id}: replay expected the recorded step {_recorded(expected)} but the "
            f"workflow yielded {yielded}: workflow code changed under a run in flight (a renamed, "
            "inserted, removed or reordered step, a changed event) or decides with something other than "
            "step results (random, the clock); use ctx.patched() to change code safely"
        )
        return Fail(error_of(NonDeterminismError(msg), expected.step_id), retryable=False)

    def _take_discards(self) -> None:
        """Records the recorded order dropped (the workflow left a retried attempt's path) are
        forgotten here and deleted with the next commit; their places are free."""
        order = self._order
        for sid in order.dropped + order.skipped:
            self.history.pop(sid, None)
            self._seqs.pop(sid, None)
            self._discarded.append(sid)
        order.dropped.clear()
        order.skipped.clear()

    # patching (SPEC §14) -----------------------------------------------------------------------

    def patched(self, patch_id: str) -> bool:
        """``ctx.patched``: see :meth:`pgflow.Context.patched`."""
        sid = _patch_step(patch_id)
        if patch_id in self._patch_results:
            return self._patch_results[patch_id]
        if self._order.replaying:  # the marker at this place, or the run passed here on older code
            found = self._take_marker(sid)
        else:
            scratch = self._scratch
            assert scratch is not None, "patched() runs while the replayer decides"
            marker = records.first_record(sid, "patch", "completed", scratch.now, self._seq(sid),
                                          self.run.attempt, completed_at=scratch.now)  # fmt: skip
            self._write(scratch, marker)
            self._seen.add(sid)
            found = True
        self._patch_results[patch_id] = found
        return found

    def deprecate_patch(self, patch_id: str) -> None:
        """``ctx.deprecate_patch``: take the marker at this place if a run recorded it, record nothing."""
        sid = _patch_step(patch_id)
        if patch_id not in self._patch_results and self._order.replaying:
            self._take_marker(sid)
        self._patch_results[patch_id] = True

    def _take_marker(self, sid: str) -> bool:
        """Replay the patch marker ``sid`` if it is the next recorded step (nothing else is touched)."""
        remaining = self._order.remaining
        if remaining and remaining[0].step_id == sid and remaining[0].kind == "patch":
            self._order.follow(sid, "patch")
            return True
        return False

    def _definition_error(self, message: str) -> Action:
        msg = f"workflow {self.run.workflow_id!r} (run {self.run.run_id}): {message}"
        return Fail(error_of(WorkflowDefinitionError(msg), getattr(self._current, "step_id", None)), False)

    # evaluating commands -----------------------------------------------------------------------

    def _evaluate(self, command: Any, now: pendulum.DateTime, mailbox: Sequence[Event], s: _Scratch) -> _Eval:
        if isinstance(command, All):
            return self._evaluate_all(command, now, mailbox, s)
        return self._evaluate_step(command, now, mailbox, s)

    def _evaluate_all(
        self, group: All, now: pendulum.DateTime, mailbox: Sequence[Event], s: _Scratch
    ) -> _Eval:
        results = [self._evaluate_step(c, now, mailbox, s) for c in group.commands]
        execs = tuple(step for r in results if isinstance(r, _Exec) for step in r.steps)
        if execs:
            return _Exec(execs)
        waits = [r for r in results if isinstance(r, _Wait)]
        if waits:
            wake = _min_time(*(w.wake_at for w in waits))
            return _Wait(waits[0].waiting, wake)
        for r in results:
            if isinstance(r, _Raise):
                return r
        return _Value([r.value for r in results if isinstance(r, _Value)])

    def _evaluate_step(
        self, cmd: Any, now: pendulum.DateTime, mailbox: Sequence[Event], s: _Scratch
    ) -> _Eval:
        rec = self.history.get(cmd.step_id)
        if rec is not None and rec.status == "completed":
            try:
                return self._recorded_value(cmd, rec)
            except SerializationError as exc:  # e.g. a result that does not fit fn's return annotation
                msg = f"step {cmd.step_id!r} of run {self.run.run_id}: {exc}"
                raise _Abort(Fail(error_of(SerializationError(msg), cmd.step_id), retryable=False)) from exc
        if rec is not None and rec.status == "failed":
            return _Raise(_step_failed(rec))
        handler = _HANDLERS[type(cmd)]
        try:
            result: _Eval = handler(self, cmd, rec, now, mailbox, s)
        except (WorkflowDefinitionError, InvalidDurationError, InvalidArgumentError) as exc:
            raise _Abort(self._definition_error(str(exc))) from exc  # bad duration/time/interval
        return result

    def _recorded_value(self, cmd: Any, rec: StepRecord) -> _Eval:
        if isinstance(cmd, Run | Transaction):  # round-tripped through fn's return annotation
            return _Value(serde.from_json(rec.output, _return_annotation(cmd.fn)))
        if isinstance(cmd, Poll):
            return _Value(PollResult(rec.timed_out, rec.output))
        if isinstance(cmd, Child) and isinstance(cmd.workflow, Workflow | WorkflowRef):
            # structured as the child's output type, as output_of does (a workflow id: as stored)
            return _Value(serde.from_json(rec.output, output_type(cmd.workflow)))
        if isinstance(cmd, WaitFor) and cmd.schema is not None and not rec.timed_out:
            return _Value(rebuild(cmd.schema, rec.output, f"data of event {cmd.event!r}"))
        return _Value(rec.output)

    def _seq(self, step_id: str) -> int:
        """The step's place in the run: the one it was given before, else the next free one."""
        seq = self._seqs.get(step_id)
        if seq is None:
            seq = self._seqs[step_id] = self._next_seq
            self._next_seq += 1
        return seq

    def _first(self, cmd: Any, status: str, now: pendulum.DateTime, **fields: Any) -> StepRecord:
        kind = KIND_OF[type(cmd)]
        return records.first_record(cmd.step_id, kind, status, now, self._seq(cmd.step_id), self.run.attempt,
                                    **fields)  # fmt: skip

    def _start(self, cmd: Any, rec: StepRecord | None, now: pendulum.DateTime) -> _Exec:
        """Execute ``cmd`` now: its ``running`` record (attempts + 1) goes with the decision."""
        kind = KIND_OF[type(cmd)]
        seq = rec.seq if rec is not None and rec.seq else self._seq(cmd.step_id)
        return _Exec(((cmd, records.running(cmd.step_id, kind, rec, now, seq, self.run.attempt)),))

    def _write(self, s: _Scratch, rec: StepRecord) -> StepRecord:
        self.history[rec.step_id] = rec
        s.writes.append(rec)
        return rec

    # per-kind handlers (called only when the step has no final record) ----------------------------

    def _run(self, cmd: Run, rec: StepRecord | None, now: Any, mailbox: Any, s: _Scratch) -> _Eval:
        if rec is not None and rec.wake_at is not None and now < rec.wake_at:  # retry backoff
            return _Wait(None, rec.wake_at)
        if cmd.retry is not None:  # the longest backoff must still be a time (year <= 9999)
            add_time(now, cmd.retry.max_delay * (1 + cmd.retry.jitter), "Retry.max_delay")
        return self._start(cmd, rec, now)

    def _transaction(
        self, cmd: Transaction, rec: StepRecord | None, now: Any, mailbox: Any, s: _Scratch
    ) -> _Eval:
        if not self.run.supports_transactions:
            msg = f"step {cmd.step_id!r} of run {self.run.run_id}: Transaction steps need the Postgres store"
            raise _Abort(Fail(error_of(UnsupportedError(msg), cmd.step_id), retryable=False))
        return self._start(cmd, rec, now)

    def _child(self, cmd: Child, rec: StepRecord | None, now: Any, mailbox: Any, s: _Scratch) -> _Eval:
        if rec is None or rec.status == "running":  # the worker starts the child run, then it waits
            return self._start(cmd, rec, now)
        return _Wait(Waiting(cmd.step_id, "child"), None)

    def _wait_for(
        self, cmd: WaitFor, rec: StepRecord | None, now: Any, mailbox: Sequence[Event], s: _Scratch
    ) -> _Eval:
        problem = id_problem(cmd.event)
        if problem is not None:
            raise WorkflowDefinitionError(
                f"step {cmd.step_id!r}: invalid event name ({problem}): {shown(cmd.event)}"
            )
        if rec is None:
            deadline = _deadline(now, cmd.timeout, "WaitFor timeout")
            rec = self._first(cmd, "waiting", now, timeout_at=deadline, event=cmd.event)
            fresh = True
        else:
            fresh = False
        for ev in mailbox:
            if ev.name != cmd.event or ev.id in self._consumed_ids:
                continue
            if rec.timeout_at is not None and ev.created_at >= rec.timeout_at:
                continue  # delivered after the deadline (e.g. while held): the timeout fired first
            try:  # a schema validates once, here; the stored result is what replay gives back
                stored = to_stored(cmd.schema, ev.data, f"data of event {ev.name!r}")
            except PgflowError as exc:
                log.warning("run %s: event %r (#%d) rejected by the schema of step %r: %s",
                            self.run.run_id, ev.name, ev.id, cmd.step_id, exc)  # fmt: skip
                continue
            self._consumed_ids.add(ev.id)
            s.consumed.append((ev.id, cmd.step_id))
            done = self._write(s, records.completed(rec, stored, now))
            return self._recorded_value(cmd, done)
        if rec.timeout_at is not None and now >= rec.timeout_at:
            self._write(s, records.completed(rec, None, now, timed_out=True))
            return _Value(None)
        if fresh:
            self._write(s, rec)
        return _Wait(Waiting(cmd.step_id, "wait_for", cmd.event, rec.timeout_at), rec.timeout_at)

    def _timer(
        self, cmd: Delay | WaitUntil, rec: StepRecord | None, now: Any, mailbox: Any, s: _Scratch
    ) -> _Eval:
        kind = KIND_OF[type(cmd)]
        if rec is None:
            if isinstance(cmd, Delay):
                wake = add_time(now, parse_duration(cmd.duration), "Delay duration")
            else:
                wake = parse_when(cmd.when)
            rec = self._first(cmd, "waiting", now, wake_at=wake)
            if wake > now:
                self._write(s, rec)
        assert rec.wake_at is not None
        if now >= rec.wake_at:
            self._write(s, records.completed(rec, None, now))
            return _Value(None)
        return _Wait(Waiting(cmd.step_id, kind, None, rec.wake_at), rec.wake_at)

    def _pause(self, cmd: Pause, rec: StepRecord | None, now: Any, mailbox: Any, s: _Scratch) -> _Eval:
        if rec is None:
            self._write(s, self._first(cmd, "waiting", now))
        return _Wait(Waiting(cmd.step_id, "pause"), None)

    def _poll(self, cmd: Poll, rec: StepRecord | None, now: Any, mailbox: Any, s: _Scratch) -> _Eval:
        interval = parse_duration(cmd.interval)
        if interval < self.run.min_poll_interval:
            raise WorkflowDefinitionError(
                f"step {cmd.step_id!r}: poll interval {interval.in_words()} is below the engine's "
                f"min_poll_interval ({self.run.min_poll_interval.in_words()})"
            )
        add_time(now, interval, "Poll interval")  # the next tick must be a time (year <= 9999)
        if rec is None:
            deadline = _deadline(now, cmd.timeout, "Poll timeout")
            rec = self._write(s, self._first(cmd, "waiting", now, timeout_at=deadline))
        if rec.timeout_at is not None and now >= rec.timeout_at:
            self._write(s, records.completed(rec, None, now, timed_out=True))
            return _Value(PollResult(True, None))
        if rec.wake_at is not None and now < rec.wake_at:
            wake = _min_time(rec.wake_at, rec.timeout_at)
            return _Wait(Waiting(cmd.step_id, "poll", None, wake), wake)
        return self._start(cmd, rec, now)


class _Abort(Exception):
    """Internal: stop evaluating and fail the run with ``action``."""

    def __init__(self, action: Action) -> None:
        self.action = action


def _step_failed(rec: StepRecord) -> StepFailedError:
    err = rec.error or RunError("Error", "step failed")
    if rec.kind == "child" and err.type == "ChildFailedError":
        return ChildFailedError(rec.step_id, err.message, rec.attempts)
    exc = StepFailedError(rec.step_id, err.type, err.message, rec.attempts)
    exc.original_traceback = err.traceback  # type: ignore[attr-defined]
    return exc


_HINTS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_MISSING = object()


def _return_annotation(fn: Any) -> Any:
    """``serde.return_annotation(fn)``, remembered per function: resolving type hints (which
    compiles string annotations) for every recorded value costs tens of µs a step. A hint that
    did not resolve is not remembered, so it is tried again next time, as before."""
    try:
        found = _HINTS.get(fn, _MISSING)
    except TypeError:  # not weak-referenceable or not hashable: no cache
        return serde.return_annotation(fn)
    if found is not _MISSING:
        return found
    hint = serde.return_annotation(fn)
    if hint is not None or "return" not in getattr(fn, "__annotations__", {"return": None}):
        with contextlib.suppress(TypeError):
            _HINTS[fn] = hint
    return hint


def _recorded(rec: StepRecord) -> str:
    event = f", event {rec.event!r}" if rec.event else ""
    return f"{rec.step_id!r} ({rec.kind}{event}, seq {rec.seq})"


def _yielded(cmd: Any) -> str:
    event = f", event={cmd.event!r}" if isinstance(cmd, WaitFor) else ""
    return f"{type(cmd).__name__}({cmd.step_id!r}{event}) (kind {KIND_OF[type(cmd)]})"


def _patch_step(patch_id: object) -> str:
    """The marker's step id; a bad patch id is a definition mistake (it fails the run at once)."""
    problem = id_problem(patch_id)
    if problem is not None:
        raise WorkflowDefinitionError(f"invalid patch id ({problem}): {shown(patch_id)}")
    return f"patch:{patch_id}"


def _deadline(now: pendulum.DateTime, timeout: Any, what: str) -> pendulum.DateTime | None:
    return None if timeout is None else add_time(now, parse_duration(timeout), what)


_HANDLERS: dict[type, Any] = {
    Run: Replayer._run,
    Transaction: Replayer._transaction,
    Child: Replayer._child,
    WaitFor: Replayer._wait_for,
    WaitUntil: Replayer._timer,
    Delay: Replayer._timer,
    Pause: Replayer._pause,
    Poll: Replayer._poll,
}
