"""Defining workflows (SPEC §1): the ``@workflow`` decorator, ``ref()`` and their errors."""

from __future__ import annotations

import dataclasses
from collections.abc import Generator
from typing import Any

import attrs
import pendulum
import pytest

import pgflow
from pgflow import Run, StepInfo, WaitFor, Workflow, WorkflowDefinitionError, workflow

Flow = Generator[Any, Any, Any]


def work(*args: Any) -> Any:
    return args


@attrs.frozen
class Signup:
    email: str
    plan: str = "free"


# --------------------------------------------------------------------------------- happy path


def test_decorator_returns_frozen_workflow_with_fields() -> None:
    """``@workflow("id", ...)`` returns a frozen Workflow exposing id, fn, input, retries, timeout, steps."""

    def onboard(ctx: pgflow.Context[Signup]) -> Flow:
        yield Run("create-account", work)
        yield WaitFor("confirm", event="confirmed")

    wf = workflow("onboard-user", input=Signup, retries=3, timeout="2 days")(onboard)
    assert isinstance(wf, Workflow)
    assert (wf.id, wf.fn, wf.input, wf.retries) == ("onboard-user", onboard, Signup, 3)
    assert wf.timeout == pendulum.duration(days=2)
    assert wf.steps == (StepInfo("create-account", "run"), StepInfo("confirm", "wait_for"))
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        wf.retries = 5  # type: ignore[misc]


def test_bare_decorator_uses_function_name() -> None:
    """Bare ``@workflow`` takes the id from the function's ``__name__``."""

    @workflow
    def send_report(ctx: Any) -> Flow:
        yield Run("s", work)

    assert send_report.id == "send_report"
    assert send_report.retries == 0 and send_report.timeout is None and send_report.input is None


def test_decorator_without_id_uses_function_name() -> None:
    """``@workflow(retries=2)`` without an id also uses ``__name__``."""

    @workflow(retries=2)
    def nightly(ctx: Any) -> Flow:
        yield Run("s", work)

    assert (nightly.id, nightly.retries) == ("nightly", 2)


def test_retry_backoff_is_parsed() -> None:
    """``retry_backoff`` accepts a duration string."""

    @workflow("wf", retry_backoff="5s")
    def wf(ctx: Any) -> Flow:
        yield Run("s", work)

    assert wf.retry_backoff == pendulum.duration(seconds=5)


def test_id_of_256_characters_is_accepted() -> None:
    """A workflow id of exactly 256 characters is valid."""

    @workflow("w" * 256)
    def wf(ctx: Any) -> Flow:
        yield Run("s", work)

    assert len(wf.id) == 256


# ------------------------------------------------------------------------------ wrong functions


def test_plain_function_is_rejected_with_hint() -> None:
    """A plain function (no ``yield``) is a WorkflowDefinitionError telling to write a generator."""

    def plain(ctx: Any) -> Any:
        return 1

    with pytest.raises(WorkflowDefinitionError, match=r"generator function.*yield") as info:
        workflow("plain")(plain)
    assert "plain" in str(info.value)


def test_async_def_is_rejected_with_hint() -> None:
    """An ``async def`` workflow is rejected, pointing at plain ``def`` + ``Run(...)``."""

    async def coro(ctx: Any) -> Any:
        return 1

    with pytest.raises(WorkflowDefinitionError, match=r"async def.*plain `def` generator.*Run\("):
        workflow("coro")(coro)


def test_async_generator_is_rejected_with_hint() -> None:
    """An async generator workflow is rejected, pointing at a plain ``def`` generator."""

    async def agen(ctx: Any) -> Any:
        yield Run("s", work)

    with pytest.raises(WorkflowDefinitionError, match=r"async generator.*plain `def` generator"):
        workflow("agen")(agen)


def test_generator_without_arguments_is_rejected() -> None:
    """A generator taking no argument is rejected: it must take the Context."""

    def no_args() -> Flow:
        yield Run("s", work)

    with pytest.raises(WorkflowDefinitionError, match=r"exactly one argument, the Context"):
        workflow("no-args")(no_args)


def test_generator_with_two_arguments_is_rejected() -> None:
    """A generator taking two required arguments is rejected."""

    def two(ctx: Any, other: Any) -> Flow:
        yield Run("s", work)

    with pytest.raises(WorkflowDefinitionError, match=r"exactly one argument"):
        workflow("two")(two)


def test_bare_decorator_checks_the_function_too() -> None:
    """Bare ``@workflow`` on a plain function raises at decoration."""
    with pytest.raises(WorkflowDefinitionError):

        @workflow
        def plain(ctx: Any) -> None:
            return None


# ------------------------------------------------------------------------------------- ids


def test_empty_id_is_rejected() -> None:
    """An empty workflow id is a WorkflowDefinitionError."""

    def wf(ctx: Any) -> Flow:
        yield Run("s", work)

    with pytest.raises(WorkflowDefinitionError, match="1-256 characters"):
        workflow("")(wf)


def test_id_over_256_characters_is_rejected() -> None:
    """A workflow id of 257 characters is a WorkflowDefinitionError."""

    def wf(ctx: Any) -> Flow:
        yield Run("s", work)

    with pytest.raises(WorkflowDefinitionError, match="1-256 characters"):
        workflow("w" * 257)(wf)


def test_ref_checks_the_id_length() -> None:
    """``pgflow.ref`` rejects an id over 256 characters."""
    with pytest.raises(WorkflowDefinitionError):
        pgflow.ref("r" * 257)


# -------------------------------------------------------------------------------- options


def test_negative_retries_are_rejected() -> None:
    """``retries`` must be a non-negative int."""

    def wf(ctx: Any) -> Flow:
        yield Run("s", work)

    with pytest.raises(WorkflowDefinitionError, match="retries"):
        workflow("wf", retries=-1)(wf)


def test_bad_timeout_is_a_definition_error() -> None:
    """An unparseable ``timeout`` fails at decoration as a WorkflowDefinitionError."""

    def wf(ctx: Any) -> Flow:
        yield Run("s", work)

    with pytest.raises(WorkflowDefinitionError, match="Invalid duration"):
        workflow("wf", timeout="soon")(wf)


def test_unusable_input_schema_is_rejected() -> None:
    """An ``input=`` that is neither a class, model nor callable is rejected at decoration."""

    def wf(ctx: Any) -> Flow:
        yield Run("s", work)

    with pytest.raises(WorkflowDefinitionError, match="invalid schema"):
        workflow("wf", input=42)(wf)


def test_dataclass_input_is_accepted() -> None:
    """A dataclass is a valid ``input=`` schema."""

    @dataclasses.dataclass
    class Order:
        sku: str

    @workflow("wf", input=Order)
    def wf(ctx: Any) -> Flow:
        yield Run("s", work)

    assert wf.input is Order


def test_literal_duplicate_step_ids_fail_at_decoration() -> None:
    """Two literal steps with the same id raise the SPEC §7 message at decoration."""

    def dup(ctx: Any) -> Flow:
        yield Run("step-1", work)
        yield Run("step-1", work)

    with pytest.raises(WorkflowDefinitionError) as info:
        workflow("dup")(dup)
    assert str(info.value) == (
        "Duplicate step ID detected: 'step-1'. Step IDs must be unique within a workflow."
    )


# ------------------------------------------------------------------------------------- refs


def test_ref_implement_builds_a_workflow() -> None:
    """``ref(...).implement(retries=...)`` returns a Workflow with the ref's id and input."""
    signup_ref = pgflow.ref("signup", input=Signup)

    @signup_ref.implement(retries=2, timeout="1h")
    def impl(ctx: Any) -> Flow:
        yield Run("s", work)

    assert isinstance(impl, Workflow)
    assert (impl.id, impl.input, impl.retries) == ("signup", Signup, 2)
    assert impl.timeout == pendulum.duration(hours=1)


def test_ref_implement_checks_the_function() -> None:
    """``ref.implement`` rejects an ``async def`` just like ``@workflow``."""
    signup_ref = pgflow.ref("signup")

    async def coro(ctx: Any) -> None:
        return None

    with pytest.raises(WorkflowDefinitionError, match="async def"):
        signup_ref.implement()(coro)


def test_ref_implement_refuses_mistakes_caught_at_decoration() -> None:
    """``ref.implement`` reads the function's source like ``@workflow``: a command that is not
    yielded is refused, naming the function and its line."""
    signup_ref = pgflow.ref("signup")

    def forgetful(ctx: Any) -> Flow:
        Run("never-runs", work)
        yield Run("s", work)

    line = forgetful.__code__.co_firstlineno + 1
    with pytest.raises(WorkflowDefinitionError, match=f"'forgetful', line {line}: .* never runs"):
        signup_ref.implement()(forgetful)


def test_the_same_literal_id_in_if_and_else_is_accepted_at_decoration() -> None:
    """SPEC §7: the body and the else of one if exclude each other, so they may share a literal id."""

    @workflow("exclusive")
    def exclusive(ctx: Any) -> Flow:
        if ctx.input:
            yield Run("notify", work)
        else:
            yield Run("notify", work)

    assert [step.id for step in exclusive.steps] == ["notify"]


def test_parse_duration_is_exported() -> None:
    """``pgflow.parse_duration`` is the public duration parser."""
    assert pgflow.parse_duration("1h30m") == pendulum.duration(hours=1, minutes=30)
    with pytest.raises(pgflow.InvalidDurationError):
        pgflow.parse_duration("")
