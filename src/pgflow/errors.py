"""Every error pgflow raises: one root, :class:`PgflowError`.

Messages name the run, workflow or step they are about, so a log line alone is enough to act on.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ChildFailedError",
    "ConfigurationError",
    "DuplicateStepError",
    "IdempotencyConflictError",
    "InvalidArgumentError",
    "InvalidDurationError",
    "InvalidInputError",
    "InvalidStateError",
    "NonDeterminismError",
    "PgflowError",
    "RunNotFoundError",
    "ScheduleNotFoundError",
    "SerializationError",
    "StepFailedError",
    "StepTimeoutError",
    "StorageError",
    "UnknownWorkflowError",
    "UnsupportedError",
    "WorkflowDefinitionError",
    "WorkflowTimeoutError",
]


class PgflowError(Exception):
    """Root of every pgflow error."""


class WorkflowDefinitionError(PgflowError):
    """A workflow definition (or a step command inside it) is invalid."""


class UnknownWorkflowError(PgflowError):
    """No workflow with that id is registered."""


class InvalidInputError(PgflowError):
    """Workflow input (or event data) failed validation; ``errors`` names each bad field."""

    def __init__(self, message: str, errors: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.errors: list[str] = list(errors)


class InvalidArgumentError(PgflowError):
    """An argument to a pgflow call is out of range or malformed."""


class InvalidDurationError(PgflowError, ValueError):
    """A duration could not be parsed or is not positive."""


class RunNotFoundError(PgflowError):
    """No such run (or it belongs to another resource)."""


class ScheduleNotFoundError(PgflowError):
    """No schedule with that id (SPEC §16)."""


class InvalidStateError(PgflowError):
    """The run's status does not allow this operation."""


class IdempotencyConflictError(PgflowError):
    """An idempotency key is already used by a run of another workflow or resource."""


class StepFailedError(PgflowError):
    """A step failed for good; thrown into the workflow generator at the step's ``yield``."""

    def __init__(self, step_id: str, error_type: str, message: str, attempts: int) -> None:
        super().__init__(f"step {step_id!r} failed after {attempts} attempt(s): {error_type}: {message}")
        self.step_id = step_id
        self.error_type = error_type
        self.message = message
        self.attempts = attempts

    def __reduce__(self) -> tuple[type[StepFailedError], tuple[str, str, str, int]]:
        return (type(self), (self.step_id, self.error_type, self.message, self.attempts))


class StepTimeoutError(PgflowError):
    """A step attempt ran longer than its ``timeout``."""


class ChildFailedError(StepFailedError):
    """A child run failed or was cancelled; thrown into the parent at the ``Child`` step's ``yield``.

    It is a :class:`StepFailedError` too, so ``except StepFailedError`` catches every step failure.
    """

    def __init__(self, step_id: str, message: str, attempts: int = 1) -> None:
        super().__init__(step_id, "ChildFailedError", message, attempts)
        self.args = (message,)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[type[StepFailedError], tuple[str, str, int]]:  # type: ignore[override]
        return (type(self), (self.step_id, self.message, self.attempts))


class NonDeterminismError(PgflowError):
    """On replay the workflow yielded a command that does not match the recorded history."""


class DuplicateStepError(PgflowError):
    """One run yielded the same step id twice."""


class SerializationError(PgflowError):
    """A value could not be serialised by the engine's converter."""


class UnsupportedError(PgflowError):
    """The operation is not supported by this store or configuration."""


class WorkflowTimeoutError(PgflowError):
    """The run exceeded its workflow ``timeout``."""


class ConfigurationError(PgflowError):
    """pgflow is configured inconsistently (e.g. both ``dsn`` and ``pool``)."""


class StorageError(PgflowError):
    """The database failed; the original psycopg error is ``__cause__``."""
