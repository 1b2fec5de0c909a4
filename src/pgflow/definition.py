"""Defining workflows: ``@workflow``, ``ref()``/``WorkflowRef``, ``Workflow`` and ``Context``;
``output_of``, a run's output typed by its workflow."""

# pyright: reportUnnecessaryIsInstance=false
# (arguments are checked at run time too: callers need not be type-checked)

from __future__ import annotations

import collections.abc
import inspect
import logging
import typing
from collections.abc import Callable, Generator, Iterable, MutableMapping
from typing import Any, Generic, Protocol, TypeAlias, cast, overload

import attrs
import pendulum
from typing_extensions import TypeVar

from . import serde, validation
from .arguments import INT32_MAX, check_int, id_problem, shown
from .arguments import check_id as check_id  # the older home of check_id; kept for its importers
from .commands import WorkflowLike
from .durations import DurationLike, check_duration, check_optional_duration
from .errors import InvalidArgumentError, InvalidStateError, PgflowError, WorkflowDefinitionError
from .logs import log_extra
from .records import RunStatus, WorkflowRun
from .static_steps import StepInfo, discover_steps

__all__ = [
    "Context",
    "Workflow",
    "WorkflowFn",
    "WorkflowRef",
    "check_workflows",
    "output_of",
    "output_type",
    "ref",
    "workflow",
]

T = TypeVar("T", default=Any)  # ctx.input's type; a bare ``Context`` is ``Context[Any]``
I = TypeVar("I", default=Any)  # noqa: E741 - what start_workflow takes as input (besides a mapping)
O = TypeVar("O", default=Any)  # noqa: E741 - what the workflow returns
I2 = TypeVar("I2")
O2 = TypeVar("O2")

WorkflowFn: TypeAlias = Callable[["Context[I]"], Generator[Any, Any, O]]
"""A workflow function: a generator function of its Context, returning its output."""


class _StepLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds run/workflow/step ids to records; silent while the run is replaying."""

    def __init__(self, ctx: Context[Any]) -> None:
        super().__init__(logging.getLogger(f"pgflow.workflow.{ctx.workflow_id}"), {})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:
        return not self._ctx.is_replaying and self.logger.isEnabledFor(level)

    def log(self, level: int, msg: object, *args: Any, **kwargs: Any) -> None:
        if self.isEnabledFor(level):
            super().log(level, msg, *args, **kwargs)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        ctx = self._ctx
        extra = {
            "run_id": ctx.run_id,
            "workflow_id": ctx.workflow_id,
            "step_id": ctx.step_id,
            **log_extra(ctx.run_id, ctx.workflow_id, ctx.step_id, ctx.attempt + 1),
        }
        kwargs["extra"] = {**extra, **kwargs.get("extra", {})}
        return msg, kwargs


@attrs.frozen
class Context(Generic[T]):
    """What a workflow function receives. ``is_replaying`` is live: true while recorded outcomes
    are being fed back into the generator."""

    input: T
    run_id: str
    workflow_id: str
    resource_id: str | None
    attempt: int
    _replaying: Callable[[], bool] = attrs.field(alias="_replaying", repr=False)
    _step_id: Callable[[], str | None] = attrs.field(alias="_step_id", repr=False, default=lambda: None)
    _patches: Any = attrs.field(alias="_patches", repr=False, default=None)  # the replayer's patch hooks

    @property
    def is_replaying(self) -> bool:
        return self._replaying()

    def patched(self, patch_id: str) -> bool:
        """Whether this run takes the new code path marked ``patch_id`` (SPEC §14).

        A run reaching this call for the first time, with nothing left to replay, records a marker
        (``patch:<patch_id>``) and gets True; a replay finds the marker at this place (True) or, for a
        run that passed here on older code, another recorded step (False, and nothing is recorded)."""
        if self._patches is None:
            raise WorkflowDefinitionError("ctx.patched() can only be called inside a running workflow")
        return bool(self._patches.patched(patch_id))

    def deprecate_patch(self, patch_id: str) -> None:
        """Once no run on code older than ``patch_id`` remains: accept its marker at this place (a run
        that recorded it) or none, record nothing. Then the ``patched`` call can go."""
        if self._patches is None:
            raise WorkflowDefinitionError(
                "ctx.deprecate_patch() can only be called inside a running workflow"
            )
        self._patches.deprecate_patch(patch_id)

    @property
    def step_id(self) -> str | None:
        """The id of the step the workflow is at (the last one it yielded)."""
        return self._step_id()

    @property
    def logger(self) -> logging.LoggerAdapter[logging.Logger]:
        return _StepLogger(self)

    @classmethod
    def create(
        cls,
        *,
        input: T,
        run_id: str,
        workflow_id: str,
        resource_id: str | None,
        attempt: int,
        replaying: Callable[[], bool],
        step_id: Callable[[], str | None],
        patches: Any = None,
    ) -> Context[T]:
        return cls(
            input, run_id, workflow_id, resource_id, attempt, _replaying=replaying, _step_id=step_id,
            _patches=patches,
        )  # fmt: skip


def _check_generator_function(fn: object, name: str) -> None:
    name = name if id_problem(name) is None else shown(name)
    if inspect.isasyncgenfunction(fn):
        raise WorkflowDefinitionError(
            f"workflow {name!r} is an async generator; write a plain `def` generator that yields step "
            "commands (async step functions go inside Run(...))"
        )
    if inspect.iscoroutinefunction(fn):
        raise WorkflowDefinitionError(
            f"workflow {name!r} is an `async def` function; write a plain `def` generator that yields step "
            "commands, e.g. `result = yield Run('step', my_async_fn)`"
        )
    if not inspect.isgeneratorfunction(fn):
        raise WorkflowDefinitionError(
            f"workflow {name!r} must be a generator function: write `def {name}(ctx): "
            "value = yield Run('step-id', fn)` (it has no `yield`)"
        )
    try:
        inspect.signature(fn).bind(object())
    except TypeError as exc:
        raise WorkflowDefinitionError(
            f"workflow {name!r} must take exactly one argument, the Context: `def {name}(ctx): ...`"
        ) from exc


@attrs.frozen(eq=False)
class Workflow(WorkflowLike[I, O]):
    """A registered workflow definition (what ``@workflow`` returns): ``Workflow[I, O]`` takes input
    ``I`` (or a mapping of its fields) and returns ``O``. ``output``: the output type given to
    ``ref(..., output=)`` when the workflow implements that ref, else None (``output_of`` then reads
    the function's return annotation)."""

    id: str
    fn: WorkflowFn[I, O]
    input: Any = None
    retries: int = 0
    timeout: pendulum.Duration | None = None
    retry_backoff: pendulum.Duration = attrs.field(factory=lambda: pendulum.duration(seconds=1))
    steps: tuple[StepInfo, ...] = ()
    output: Any = attrs.field(default=None, kw_only=True)
    concurrency: int | None = attrs.field(default=None, kw_only=True)  # runs in progress at once
    key_concurrency: int | None = attrs.field(default=None, kw_only=True)  # … per concurrency_key

    def __call__(self, ctx: Context[I]) -> Generator[Any, Any, O]:
        return self.fn(ctx)

    @property
    def settings(self) -> dict[str, Any]:
        """Run defaults, stored at registration so a Client starting by id applies them too."""
        timeout = self.timeout.total_seconds() if self.timeout is not None else None
        return {
            "retries": self.retries,
            "timeout": timeout,
            "retry_backoff": self.retry_backoff.total_seconds(),
            "concurrency": self.concurrency,
            "key_concurrency": self.key_concurrency,
        }

    def validate_input(self, raw: Any) -> Any:
        """Validate ``raw`` and return the JSON value to store (raises InvalidInputError)."""
        return validation.to_stored(self.input, raw, f"input of workflow {self.id!r}")

    def build_input(self, stored: Any) -> Any:
        """Rebuild ``ctx.input`` from the stored JSON, identically on every replay."""
        return validation.rebuild(self.input, stored)


@attrs.frozen(eq=False)
class WorkflowRef(WorkflowLike[I, O]):
    """A workflow's id and input schema without its code, for services that only start runs;
    ``WorkflowRef[I, O]`` like ``Workflow[I, O]``. ``output``: the output type given to ``ref``."""

    id: str
    input: Any = None
    output: Any = attrs.field(default=None, kw_only=True)
    concurrency: int | None = attrs.field(default=None, kw_only=True)
    key_concurrency: int | None = attrs.field(default=None, kw_only=True)

    def validate_input(self, raw: Any) -> Any:
        return validation.to_stored(self.input, raw, f"input of workflow {self.id!r}")

    def implement(
        self, retries: int = 0, timeout: DurationLike | None = None, retry_backoff: DurationLike = "1s",
        concurrency: int | None = None, key_concurrency: int | None = None,
    ) -> Callable[[WorkflowFn[I, O]], Workflow[I, O]]:  # fmt: skip
        """The workflow's code for this ref; the limits default to the ref's."""
        limits = (
            concurrency if concurrency is not None else self.concurrency,
            key_concurrency if key_concurrency is not None else self.key_concurrency,
        )

        def decorate(fn: WorkflowFn[I, O]) -> Workflow[I, O]:
            wf: Workflow[I, O] = _build(self.id, fn, self.input, retries, timeout, retry_backoff, *limits)
            return attrs.evolve(wf, output=self.output)

        return decorate


def _check_schema(wid: str, input: Any) -> None:
    """Reject an unusable ``input=`` schema at definition time, naming the argument."""
    try:
        validation.make_validator(input)
    except WorkflowDefinitionError as exc:
        raise WorkflowDefinitionError(f"workflow {wid!r}: input: {exc}") from None


def _build(
    wid: str, fn: Any, input: Any, retries: int, timeout: Any, retry_backoff: Any,
    concurrency: Any = None, key_concurrency: Any = None,
) -> Workflow[Any, Any]:  # fmt: skip
    check_id(wid, "workflow id", WorkflowDefinitionError)
    _check_generator_function(fn, getattr(fn, "__name__", wid))
    check_int(retries, f"workflow {wid!r}: retries", 0, INT32_MAX, WorkflowDefinitionError)
    try:
        parsed_timeout = check_optional_duration(timeout, "timeout")
        backoff = check_duration(retry_backoff, "retry_backoff")
    except PgflowError as exc:
        raise WorkflowDefinitionError(f"workflow {wid!r}: {exc}") from None
    _check_schema(wid, input)
    limits = _check_limits(wid, concurrency, key_concurrency)
    return Workflow(wid, fn, input, retries, parsed_timeout, backoff, discover_steps(fn),
                    concurrency=limits[0], key_concurrency=limits[1])  # fmt: skip


def _check_limits(wid: str, concurrency: Any, key_concurrency: Any) -> tuple[int | None, int | None]:
    """``concurrency`` / ``key_concurrency``: None or a positive int, else WorkflowDefinitionError."""
    return tuple(  # type: ignore[return-value]
        None
        if value is None
        else check_int(value, f"workflow {wid!r}: {name}", 1, INT32_MAX, WorkflowDefinitionError)
        for name, value in (("concurrency", concurrency), ("key_concurrency", key_concurrency))
    )


class WorkflowDecorator(Protocol[I2]):
    """What ``@workflow("id", input=Model)`` returns: it takes a workflow function whose context has
    input ``I`` and gives a ``Workflow[I, O]``, ``O`` being the function's return type."""

    def __call__(self, fn: WorkflowFn[I2, O2], /) -> Workflow[I2, O2]: ...


class InferringDecorator(Protocol):
    """What ``@workflow("id")`` (no ``input=`` class) returns: ``I`` comes from the function's
    ``Context[I]`` annotation, ``O`` from its return type."""

    def __call__(self, fn: WorkflowFn[I2, O2], /) -> Workflow[I2, O2]: ...


@overload
def workflow(id: WorkflowFn[I2, O2], /) -> Workflow[I2, O2]: ...


@overload
def workflow(
    id: str | None = None,
    *,
    input: type[I2],
    retries: int = 0,
    timeout: DurationLike | None = None,
    retry_backoff: DurationLike = "1s",
    concurrency: int | None = None,
    key_concurrency: int | None = None,
) -> WorkflowDecorator[I2]: ...


@overload
def workflow(
    id: str | None = None,
    *,
    input: Callable[[Any], Any],
    retries: int = 0,
    timeout: DurationLike | None = None,
    retry_backoff: DurationLike = "1s",
    concurrency: int | None = None,
    key_concurrency: int | None = None,
) -> WorkflowDecorator[Any]: ...


@overload
def workflow(
    id: str | None = None,
    *,
    input: None = None,
    retries: int = 0,
    timeout: DurationLike | None = None,
    retry_backoff: DurationLike = "1s",
    concurrency: int | None = None,
    key_concurrency: int | None = None,
) -> InferringDecorator: ...


def workflow(
    id: Any = None, *, input: Any = None, retries: int = 0, timeout: Any = None, retry_backoff: Any = "1s",
    concurrency: int | None = None, key_concurrency: int | None = None,
) -> Any:  # fmt: skip
    """Decorator: ``@workflow``, ``@workflow("id")`` or ``@workflow("id", input=Model, retries=3)``.

    Typed: ``input=`` a class makes a ``Workflow[Model, O]``; without it ``I`` is the type of the
    function's ``Context[I]``; a validator function (``input=f``) gives ``Workflow[Any, O]``. ``O``
    is the generator's return type (``-> pgflow.Flow[O]``). ``concurrency`` / ``key_concurrency``:
    at most that many runs in progress at once, per workflow / per ``concurrency_key`` (SPEC §16)."""
    options = (retries, timeout, retry_backoff, concurrency, key_concurrency)
    if callable(id) and not isinstance(id, str):  # bare @workflow
        return _build(getattr(id, "__name__", ""), id, input, *options)

    def decorate(fn: WorkflowFn) -> Workflow:
        return _build(id if id is not None else getattr(fn, "__name__", ""), fn, input, *options)

    return decorate


@overload
def ref(
    id: str, *, input: type[I2], output: type[O] | None = None, concurrency: int | None = None,
    key_concurrency: int | None = None,
) -> WorkflowRef[I2, O]: ...  # fmt: skip


@overload
def ref(
    id: str, *, input: Callable[[Any], Any] | None = None, output: type[O] | None = None,
    concurrency: int | None = None, key_concurrency: int | None = None,
) -> WorkflowRef[Any, O]: ...  # fmt: skip


def ref(
    id: str, *, input: Any = None, output: Any = None, concurrency: int | None = None,
    key_concurrency: int | None = None,
) -> WorkflowRef[Any, Any]:  # fmt: skip
    """A reference to a workflow by id (and its input schema), for clients without handler code.

    ``output``: the type the workflow returns, used by ``output_of`` (structured with the engine's
    converter) and by type checkers (``WorkflowRef[I, O]``); not validated against the workflow.
    ``concurrency`` / ``key_concurrency``: the limits ``implement`` gives the workflow's code (the
    engines enforce those of the definition they run)."""
    check_id(id, "workflow id", WorkflowDefinitionError)
    _check_schema(id, input)
    limits = _check_limits(id, concurrency, key_concurrency)
    return WorkflowRef(id, input, output=output, concurrency=limits[0], key_concurrency=limits[1])


def check_workflows(workflows: object, name: str = "workflows") -> tuple[Workflow, ...]:
    """The ``workflows=`` option of Engine and Harness: an iterable of ``Workflow`` objects."""
    if isinstance(workflows, str | bytes) or not isinstance(workflows, Iterable):
        raise InvalidArgumentError(
            f"{name} must be an iterable of Workflow (from @workflow), got {type(workflows).__name__}: "
            f"{shown(workflows)}"
        )
    found: tuple[object, ...] = tuple(cast("Iterable[object]", workflows))
    for wf in found:
        if not isinstance(wf, Workflow):
            raise InvalidArgumentError(
                f"{name} must hold Workflow objects (from @workflow), got {type(wf).__name__}: {shown(wf)}"
            )
    return cast("tuple[Workflow, ...]", found)


def output_type(workflow: Workflow[Any, Any] | WorkflowRef[Any, Any]) -> Any:
    """The type a workflow returns, as far as it is known at run time: ``ref(..., output=)``, else
    the third argument of the function's ``Generator``/``Flow`` return annotation; None when
    unknown (no annotation, ``Any``, an unresolvable name)."""
    if workflow.output is not None:
        return workflow.output
    if not isinstance(workflow, Workflow):
        return None
    hint = serde.return_annotation(workflow.fn)
    if typing.get_origin(hint) is not collections.abc.Generator:
        return None
    args = typing.get_args(hint)
    return args[2] if len(args) == 3 else None


def output_of(run: WorkflowRun, workflow: Workflow[Any, O] | WorkflowRef[Any, O]) -> O:
    """The output of ``run``, a completed run of ``workflow``, typed as the workflow's output ``O``.

    At run time the stored output (JSON) is structured as the workflow's output type (see
    :func:`output_type`) with the engine's converter, as a step result is with its function's return
    annotation: an attrs class or a dataclass comes back as an instance; without a known type the
    stored value is returned as it is. A run of another workflow is an ``InvalidArgumentError``; a
    run that has not completed (no output) an ``InvalidStateError``; an output that does not fit
    the type a ``SerializationError``."""
    if not isinstance(run, WorkflowRun):
        raise InvalidArgumentError(f"run must be a WorkflowRun, got {type(run).__name__}: {shown(run)}")
    if not isinstance(workflow, Workflow | WorkflowRef):
        raise InvalidArgumentError(
            f"workflow must be a Workflow or a WorkflowRef, got {type(workflow).__name__}: {shown(workflow)}"
        )
    if run.workflow_id != workflow.id:
        raise InvalidArgumentError(
            f"run {run.id} is a run of workflow {run.workflow_id!r}, not of {workflow.id!r}"
        )
    if run.status != RunStatus.COMPLETED:
        why = f" ({run.error.type}: {run.error.message})" if run.error is not None else ""
        raise InvalidStateError(f"run {run.id} is {run.status.value}, not completed: it has no output{why}")
    output: O = serde.from_json(run.output, output_type(workflow))
    return output
