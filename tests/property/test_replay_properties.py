"""Properties of the replay core (DESIGN §3), on generated workflows run by the Harness.

Each example is a :class:`flowgen.Scenario`: a list of step specs (Run with failures and per-step
Retry, WaitFor, Delay, WaitUntil, Poll, Pause, All) interpreted by one generic workflow, with crash
points and a script of client actions. While it plays, every round checks that completed records
never change and their steps never run again, that no delivered event is lost, that retry budgets
hold, that two fresh Replayers over the recorded history decide alike, and (inside the processor)
that the live generator decides like a replay from scratch.
"""

from __future__ import annotations

from flowgen import (
    AllSpec,
    CheckedReplayer,
    PollSpec,
    RunSpec,
    Scenario,
    WaitSpec,
    checked_processor,
    ops,
    outcome,
    play,
    scenarios,
)
from hypothesis import event, example, given, note, settings
from hypothesis import strategies as st


@given(scenarios())
@example(  # a crash before a Retry step's first call used up a retry (tests/test_crash_retry_budget.py)
    Scenario(
        (AllSpec((WaitSpec("s0.0", "e0", 30, actions=("timeout",)), RunSpec("s0.1", "fail", retry=2))),),
        crash_after=frozenset({"s0.0"}),
    )
)
@example(  # the workflow timeout fires while the run is held (hold_late): it fails the held run
    Scenario(
        (
            WaitSpec("s0", "e0", None, actions=("hold_late",)),
            WaitSpec("s1", "e0", 600, actions=("timeout",)),
            WaitSpec("s2", "e0", None, actions=("hold_late",)),
        ),
        timeout="1800s",
    )
)
def test_crashed_run_ends_like_the_crash_free_run(scenario: Scenario) -> None:
    """Crashes before/after any steps change neither the final status nor the output."""
    note(repr(scenario))
    with checked_processor():
        clean = play(scenario, crashes=False)
        crashed = play(scenario, crashes=True)
    event(f"status: {clean.run.status}")
    event(f"crash points fired: {crashed.crashes}")
    event(f"events sent: {min(clean.sent, 3)}+")
    if any(isinstance(scenario.by_id()[sid], PollSpec) for sid in scenario.crash_before):
        # a crash that loses a poll call's outcome calls it once more: a poll whose answer depends
        # on how often it was called may answer sooner, so the run may skip a wait (and what a
        # script does there); every invariant was still checked while it played
        event("crash lost a poll call's outcome")
        return
    assert outcome(crashed.run) == outcome(clean.run)
    assert crashed.sent == clean.sent
    error = clean.run.error
    event(f"error: {error and error.type}")
    if error is not None and error.type != "WorkflowTimeoutError":  # a timeout is final at once
        assert clean.run.retry_count == scenario.retries  # the budget was used up, not exceeded
    for spec in scenario.flat():
        if isinstance(spec, RunSpec) and spec.mode == "ok":
            # a step that never fails runs once, or once more per crash that lost its outcome
            assert clean.effects.get(spec.sid, 0) <= 1
            hits = len(scenario.crash_before)
            assert crashed.effects.get(spec.sid, 0) <= 1 + hits


@given(scenarios(max_steps=5))
def test_the_asyncio_driver_plays_like_the_blocking_one(scenario: Scenario) -> None:
    """The AsyncHarness (the worker protocol's asyncio driver) and the Harness (its blocking driver)
    play every scenario, crashes included, to the same end, running the same steps as often."""
    note(repr(scenario))
    with checked_processor():
        blocking = play(scenario, crashes=True)
        asynchronous = play(scenario, crashes=True, driver="asyncio")
    assert outcome(asynchronous.run) == outcome(blocking.run)
    assert (asynchronous.effects, asynchronous.sent, asynchronous.crashes) == (
        blocking.effects, blocking.sent, blocking.crashes,
    )  # fmt: skip


@given(scenarios(max_steps=5), ops)
def test_invariants_hold_under_arbitrary_interleavings(scenario: Scenario, script: list) -> None:
    """Events, advances, pauses, resumes, fast-forwards and cancels at arbitrary moments keep every invariant."""
    note(repr(scenario))
    with checked_processor():
        played = play(scenario, ops=script)
    event(f"status: {played.run.status}")
    event(f"crash points fired: {played.crashes}")
    assert played.run.status in ("completed", "failed", "cancelled")


@settings(max_examples=25)
@given(st.data())
def test_live_cache_checks_really_run(data: st.DataObject) -> None:
    """Sanity: the live-versus-scratch comparison is exercised (it is not silently bypassed)."""
    before = CheckedReplayer.checks
    with checked_processor():
        play(data.draw(scenarios(max_steps=2)), crashes=False)
    assert CheckedReplayer.checks > before
