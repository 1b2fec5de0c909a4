"""Replay follows the recorded order (SPEC §14), tested on the pure interpreter with hand-built
histories: every kind of divergence is a NonDeterminismError naming the run, the recorded step
expected (id, kind, seq) and the command yielded; a run retry's records are handled as the rule says;
patching takes new code paths safely."""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

import attrs
import pendulum
import pytest

import pgflow
from pgflow import All, Delay, Pause, Run, WaitFor, workflow
from pgflow.records import RunError, StepRecord
from pgflow.replay import Complete, Decision, Execute, Fail, Replayer, ReplayInput, Suspend

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


def step(name: str) -> Callable[[], str]:
    def fn() -> str:
        raise AssertionError(f"the replay called {name}: a decision never runs step code")

    return fn


FN = {name: step(name) for name in ("a", "b", "b2", "x", "y", "z", "c", "new", "undo", "charge", "refund",
                                    "ship", "charge-v2")}  # fmt: skip


class History:
    """A run's records, built in the order the run reached them (seq 1, 2, …)."""

    def __init__(self) -> None:
        self.records: dict[str, StepRecord] = {}

    def _add(self, step_id: str, kind: str, status: str, **fields: Any) -> History:
        seq = len(self.records) + 1
        self.records[step_id] = StepRecord(step_id, kind, status, started_at=T0, seq=seq, **fields)
        return self

    def ran(self, step_id: str, output: Any = None, attempt: int = 0) -> History:
        return self._add(step_id, "run", "completed", output=output, attempts=1, completed_at=T0,
                         run_attempt=attempt)  # fmt: skip

    def failed(self, step_id: str, attempt: int = 0) -> History:
        err = RunError("ValueError", f"{step_id} broke", None, step_id)
        return self._add(
            step_id, "run", "failed", error=err, attempts=1, completed_at=T0, run_attempt=attempt
        )

    def running(self, step_id: str) -> History:
        return self._add(step_id, "run", "running", attempts=1)

    def waits(self, step_id: str, event: str) -> History:
        return self._add(step_id, "wait_for", "waiting", event=event)

    def got(self, step_id: str, event: str, data: Any = None, attempt: int = 0) -> History:
        return self._add(step_id, "wait_for", "completed", event=event, output=data, completed_at=T0,
                         run_attempt=attempt)  # fmt: skip

    def patch(self, patch_id: str) -> History:
        return self._add(f"patch:{patch_id}", "patch", "completed", completed_at=T0)


def decide(wf: pgflow.Workflow, history: History, attempt: int = 0) -> Decision:
    replayer = Replayer(wf, ReplayInput("r1", wf.id, None, attempt, None), history.records)
    try:
        return replayer.decide(T0, [])
    finally:
        replayer.close()


def divergence(decision: Decision) -> str:
    action = decision.action
    assert isinstance(action, Fail) and not action.retryable, action
    assert action.error.type == "NonDeterminismError", action.error
    return action.error.message


def executes(decision: Decision) -> list[str]:
    assert isinstance(decision.action, Execute), decision.action
    return [cmd.step_id for cmd, _ in decision.action.steps]


def flow(*commands: Callable[[], Any]) -> pgflow.Workflow:
    """A workflow yielding the given commands in order (each built by a no-argument callable)."""

    def body(ctx: Any) -> Flow:
        for make in commands:
            yield make()
        return "done"

    return workflow(f"wf-{len(commands)}-{id(commands)}")(body)


A = lambda: Run("a", FN["a"])  # noqa: E731
B = lambda: Run("b", FN["b"])  # noqa: E731
W = lambda: WaitFor("w", event="go")  # noqa: E731
RECORDED = History().ran("a", 1).ran("b", 2).waits("w", "go")  # a run of [a, b, w] waiting at w


def test_the_same_code_replays_to_the_same_wait() -> None:
    """Unchanged code replays every record in order and stops at the wait."""
    decision = decide(flow(A, B, W), RECORDED)
    assert isinstance(decision.action, Suspend) and decision.action.waiting is not None
    assert decision.action.waiting.step_id == "w"


@pytest.mark.parametrize(
    ("new_code", "expected", "yielded"),
    [
        pytest.param((A, lambda: Run("b2", FN["b2"]), W), "'b' (run, seq 2)", "Run('b2')", id="rename"),
        pytest.param(
            (A, lambda: Run("x", FN["x"]), B, W), "'b' (run, seq 2)", "Run('x')", id="insert-before"
        ),
        pytest.param((A, W), "'b' (run, seq 2)", "WaitFor('w', event='go')", id="remove"),
        pytest.param((B, A, W), "'a' (run, seq 1)", "Run('b')", id="reorder"),
        pytest.param(
            (A, B, lambda: WaitFor("w", event="went")),
            "'w' (wait_for, event 'go', seq 3)",
            "WaitFor('w', event='went')",
            id="changed-event",
        ),
        pytest.param((A, lambda: Delay("b", "1h"), W), "'b' (run, seq 2)", "Delay('b')", id="changed-kind"),
    ],
)
def test_each_kind_of_divergence_is_named(new_code: tuple[Any, ...], expected: str, yielded: str) -> None:
    """Renaming, inserting, removing or reordering a step before the point the run reached, or
    changing an event or a kind, is a NonDeterminismError naming run, expected record and command."""
    message = divergence(decide(flow(*new_code), RECORDED))
    assert "run r1" in message and expected in message and yielded in message


def test_returning_while_records_remain_is_a_divergence() -> None:
    """A generator that returns while recorded steps remain unreplayed fails with NonDeterminismError."""
    message = divergence(decide(flow(A), RECORDED))
    assert "returned" in message and "'b' (run, seq 2)" in message


def test_code_added_after_the_recorded_prefix_replays_identically() -> None:
    """Steps added after the point the run reached are simply new: the run goes on."""
    history = History().ran("a", 1).ran("b", 2).got("w", "go", {"ok": True})
    assert executes(decide(flow(A, B, W, lambda: Run("new", FN["new"])), history)) == ["new"]


def test_a_changed_all_membership_is_a_divergence() -> None:
    """An All whose steps changed (one replaced) diverges at the first step that differs."""
    history = History().ran("x", 1).ran("y", 2).waits("w", "go")
    new_code = flow(lambda: All(Run("x", FN["x"]), Run("z", FN["z"])), W)
    message = divergence(decide(new_code, history))
    assert "'y' (run, seq 2)" in message and "Run('z')" in message


def test_a_running_record_is_expected_and_executed_again() -> None:
    """A step left running by a crash is expected at its place and executes again (attempt 2)."""
    history = History().ran("a", 1).running("b")
    decision = decide(flow(A, B, W), history)
    assert executes(decision) == ["b"]
    assert isinstance(decision.action, Execute)
    ((_, record),) = decision.action.steps
    assert (record.status, record.attempts, record.seq) == ("running", 2, 2)


def test_a_failure_of_an_earlier_attempt_is_retried_at_its_place() -> None:
    """A run retry replays completed steps and executes the step that failed before, in its place."""
    history = History().ran("a", 1).failed("b", attempt=0)
    decision = decide(flow(A, B, W), history, attempt=1)
    assert executes(decision) == ["b"]
    assert isinstance(decision.action, Execute) and decision.action.steps[0][1].seq == 2
    assert decision.discards == ()


def test_a_failure_of_an_earlier_attempt_is_not_expected() -> None:
    """Records of failed attempts a run retry discarded are not expected: new code may go elsewhere
    (the stale failure is deleted with the next commit)."""
    history = History().ran("a", 1).failed("b", attempt=0)
    decision = decide(flow(A, lambda: Run("c", FN["c"])), history, attempt=1)
    assert executes(decision) == ["c"] and decision.discards == ("b",)


def test_records_after_a_retried_failure_replay_while_the_path_is_the_same() -> None:
    """A record reached after a failure of an earlier attempt (a compensation) is replayed, not
    executed again, when the retried attempt takes the same path."""
    history = History().ran("a", 1).failed("b", attempt=0).ran("undo", 3, attempt=0)
    replayer = Replayer(flow(A, B, lambda: Run("undo", FN["undo"]), W),
                        ReplayInput("r1", "wf", None, 1, None), history.records)  # fmt: skip
    decision = replayer.decide(T0, [])
    assert executes(decision) == ["b"]
    ((_, started),) = decision.action.steps  # type: ignore[union-attr]
    replayer.record(attrs.evolve(started, status="failed", error=RunError("ValueError", "again")))
    assert isinstance(replayer.decide(T0, []).action, Fail)  # "undo" replayed, then the failure raised


def _saga(ctx: Any) -> Flow:
    try:
        yield Run("charge", FN["charge"])
    except pgflow.StepFailedError:
        yield Run("refund", FN["refund"])
        raise
    yield Run("ship", FN["ship"])


def test_a_retried_failure_that_now_succeeds_drops_the_old_path() -> None:
    """When the retried step now succeeds, the records its earlier failure led to are dropped (they
    no longer happen on this path) instead of being a divergence."""
    saga = workflow("saga")(_saga)
    history = History().failed("charge", attempt=0).ran("refund", None, attempt=0)
    replayer = Replayer(saga, ReplayInput("r1", "saga", None, 1, None), history.records)
    first = replayer.decide(T0, [])
    assert executes(first) == ["charge"]
    ((_, started),) = first.action.steps  # type: ignore[union-attr]
    replayer.record(attrs.evolve(started, status="completed", output="paid", completed_at=T0))
    decision = replayer.decide(T0, [])
    assert executes(decision) == ["ship"] and decision.discards == ("refund",)


# -- patching -------------------------------------------------------------------------------------


def _patched_flow(ctx: Any) -> Flow:
    yield Run("a", FN["a"])
    if ctx.patched("new-charge"):
        yield Run("charge-v2", FN["charge-v2"])
    else:
        yield Run("charge", FN["charge"])
    yield WaitFor("w", event="go")


PATCHED = workflow("patched")(_patched_flow)


def test_a_new_run_records_the_patch_marker_and_takes_the_new_path() -> None:
    """With nothing left to replay, patched() records a `patch:` marker (next seq) and returns True."""
    decision = decide(PATCHED, History().ran("a", 1))
    assert executes(decision) == ["charge-v2"]
    (marker,) = decision.writes
    assert (marker.step_id, marker.kind, marker.status, marker.seq) == (
        "patch:new-charge",
        "patch",
        "completed",
        2,
    )
    assert decision.action.steps[0][1].seq == 3  # type: ignore[union-attr]


def test_a_run_that_passed_on_older_code_keeps_the_old_path() -> None:
    """On replay, where the recorded step is not the marker, patched() is False and records nothing."""
    history = History().ran("a", 1).ran("charge", "old").waits("w", "go")
    decision = decide(PATCHED, history)
    assert isinstance(decision.action, Suspend) and decision.writes == ()


def test_a_recorded_marker_replays_the_new_path() -> None:
    """On replay, the marker at that place makes patched() True again."""
    history = History().ran("a", 1).patch("new-charge").ran("charge-v2", "new").waits("w", "go")
    assert isinstance(decide(PATCHED, history).action, Suspend)


def _deprecated_flow(ctx: Any) -> Flow:
    yield Run("a", FN["a"])
    ctx.deprecate_patch("new-charge")
    yield Run("charge-v2", FN["charge-v2"])
    yield WaitFor("w", event="go")


@pytest.mark.parametrize("with_marker", [True, False], ids=["run-with-marker", "run-without"])
def test_deprecate_patch_accepts_a_marker_or_none(with_marker: bool) -> None:
    """deprecate_patch() consumes a recorded marker at its place, or accepts none; it records nothing."""
    history = History().ran("a", 1)
    if with_marker:
        history.patch("new-charge")
    history.ran("charge-v2", "new").waits("w", "go")
    decision = decide(workflow("deprecated")(_deprecated_flow), history)
    assert isinstance(decision.action, Suspend) and decision.writes == ()


def test_a_bad_patch_id_fails_the_run_as_a_definition_error() -> None:
    """A patch id that breaks the id rules fails the run at once with WorkflowDefinitionError."""

    def body(ctx: Any) -> Flow:
        ctx.patched("")
        yield Pause("p")

    decision = decide(workflow("bad-patch")(body), History())
    assert isinstance(decision.action, Fail) and decision.action.error.type == "WorkflowDefinitionError"


def test_the_complete_replay_of_a_finished_history_completes() -> None:
    """A finished run's whole history replays to the same completion (nothing executed)."""
    history = History().ran("a", 1).ran("b", 2).got("w", "go", {"ok": 1})
    assert decide(flow(A, B, W), history).action == Complete("done")
