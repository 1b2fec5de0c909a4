"""The engine's one cattrs converter: values <-> pure JSON, plus the JSON text helpers of the stores.

Step results, inputs and event data all pass through :func:`to_json` / :func:`from_json` here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import inspect
import json
import math
import typing
import weakref
from collections.abc import Callable, Iterable, Sequence
from collections.abc import Set as AbstractSet
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, TypeAlias
from uuid import UUID

import attrs
import cattrs
import pendulum
from cattrs.preconf.json import make_converter
from cattrs.v import format_exception, transform_error

from pgflow.arguments import MAX_SHOWN, clip, shown
from pgflow.errors import SerializationError

__all__ = [
    "JSON",
    "ModelValidationError",
    "StrictTypeError",
    "annotation_name",
    "configure",
    "converter",
    "dump_model",
    "dumps",
    "from_json",
    "is_model_class",
    "loads",
    "make_json_converter",
    "model_errors",
    "return_annotation",
    "round_trip",
    "to_json",
]

JSON: TypeAlias = Any
"""A pure JSON value: dict (str keys), list, str, int, finite float, bool or None."""

_NO_ANNOTATION: tuple[object, ...] = (None, Any, object, inspect.Parameter.empty)


class StrictTypeError(TypeError):
    """A value has the wrong type for a structure hook; the message says what was expected."""


def _got(value: object) -> str:
    return type(value).__name__


# --- hooks ---------------------------------------------------------------------------------


def _unstructure_datetime(value: datetime) -> str:
    if value.tzinfo is None or value.utcoffset() is None:
        value = value.replace(tzinfo=UTC)
    return value.isoformat()


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        return value.replace(tzinfo=UTC)
    return value


def _structure_datetime(value: object, _: object) -> datetime:
    if isinstance(value, datetime):
        return _aware(value)
    if not isinstance(value, str):
        raise StrictTypeError(f"expected an ISO-8601 datetime string, got {_got(value)}")
    return _aware(datetime.fromisoformat(value))


def _structure_pendulum(value: object, _: object) -> pendulum.DateTime:
    if isinstance(value, pendulum.DateTime):
        return value
    return pendulum.instance(_structure_datetime(value, None))


def _structure_date(value: object, _: object) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise StrictTypeError(f"expected an ISO-8601 date string, got {_got(value)}")
    return date.fromisoformat(value)


def _structure_uuid(value: object, _: object) -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise StrictTypeError(f"expected a UUID string, got {_got(value)}")
    return UUID(value)


def _structure_decimal(value: object, _: object) -> Decimal:
    if isinstance(value, Decimal):
        return value
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise StrictTypeError(f"expected a decimal string or number, got {_got(value)}")
    try:
        return Decimal(str(value))
    except InvalidOperation:
        raise ValueError(f"{value!r} is not a decimal number") from None


def _structure_none(value: object, _: object) -> None:
    if value is not None:
        raise StrictTypeError(f"expected None, got {_got(value)}")


def _passthrough(value: object, _: object) -> object:
    return value


def _enum_unstructure_factory(_: type[Enum], conv: cattrs.Converter) -> Callable[[Enum], Any]:
    def unstructure_enum(member: Enum) -> Any:
        return conv.unstructure(member.value)

    return unstructure_enum


# --- pydantic v2 models, duck-typed (pydantic is never imported here) -----------------------------

MAX_MODEL_ERRORS = 5  # errors of one model validation shown in a message


def is_model_class(t: object) -> bool:
    """A pydantic-v2-like model class: ``model_validate`` and ``model_dump``, not an attrs class or
    dataclass (those are structured field by field)."""
    return (
        isinstance(t, type)
        and callable(getattr(t, "model_validate", None))
        and callable(getattr(t, "model_dump", None))
        and not attrs.has(t)
        and not dataclasses.is_dataclass(t)
    )


_BY_ALIAS: weakref.WeakKeyDictionary[type, bool] = weakref.WeakKeyDictionary()


def _dumps_by_alias(cls: type) -> bool:
    """Whether ``cls.model_dump`` takes ``by_alias`` (pydantic's does; a hand-made look-alike may
    not), remembered per class."""
    found = _BY_ALIAS.get(cls)
    if found is None:
        try:
            parameters = inspect.signature(cls.model_dump).parameters  # type: ignore[attr-defined]
            found = "by_alias" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())
        except (TypeError, ValueError):
            found = False
        with contextlib.suppress(TypeError):
            _BY_ALIAS[cls] = found
    return found


def dump_model(value: Any) -> JSON:
    """A model's JSON form: ``model_dump(mode="json", by_alias=True)``. By alias, because that is
    what ``model_validate`` reads back by default (a field ``Field(alias="userName")`` round-trips);
    a look-alike whose ``model_dump`` has no ``by_alias`` gets ``model_dump(mode="json")``."""
    if _dumps_by_alias(type(value)):
        return value.model_dump(mode="json", by_alias=True)
    return value.model_dump(mode="json")


def model_errors(exc: BaseException) -> list[str]:
    """``['age: Input should be a valid integer', ...]`` from a pydantic ``ValidationError``
    (its ``errors()``: ``loc`` and ``msg`` only, never the input), else the exception itself."""
    errors_fn = getattr(exc, "errors", None)
    fallback = [f"{type(exc).__name__}: {clip(str(exc))}" if str(exc) else type(exc).__name__]
    if not callable(errors_fn):
        return fallback
    try:
        items = list(errors_fn())
        lines = []
        for item in items:
            loc = ".".join(str(part) for part in item.get("loc", ()))
            msg = clip(str(item.get("msg", item)))
            lines.append(f"{loc}: {msg}" if loc else msg)
    except Exception:
        return fallback
    return lines or fallback


class ModelValidationError(ValueError):
    """``model_validate`` rejected a value; the message lists (a bounded number of) its errors."""

    def __init__(self, model: type, errors: list[str]) -> None:
        self.model = model
        self.errors = errors
        shown_errors = errors[:MAX_MODEL_ERRORS]
        more = len(errors) - len(shown_errors)
        text = "; ".join(shown_errors) + (f"; ... ({more} more)" if more > 0 else "")
        super().__init__(clip(text, 2 * MAX_SHOWN))


def _model_unstructure_factory(_: type, __: cattrs.Converter) -> Callable[[Any], JSON]:
    return dump_model


def _model_structure_factory(model: type, _: cattrs.Converter) -> Callable[[Any, Any], Any]:
    validate = model.model_validate  # type: ignore[attr-defined]

    def structure_model(value: Any, __: Any) -> Any:
        try:
            return validate(value)
        except Exception as exc:
            raise ModelValidationError(model, model_errors(exc)) from exc

    return structure_model


def configure(conv: cattrs.Converter) -> None:
    """Register pgflow's hooks (datetimes, dates, UUIDs, Decimals, enums, None, pydantic-like
    models) on ``conv``."""
    conv.register_unstructure_hook(datetime, _unstructure_datetime)
    conv.register_structure_hook(datetime, _structure_datetime)
    conv.register_structure_hook(pendulum.DateTime, _structure_pendulum)
    conv.register_unstructure_hook(date, date.isoformat)
    conv.register_structure_hook(date, _structure_date)
    conv.register_unstructure_hook(UUID, str)
    conv.register_structure_hook(UUID, _structure_uuid)
    conv.register_unstructure_hook(Decimal, str)
    conv.register_structure_hook(Decimal, _structure_decimal)
    conv.register_structure_hook(type(None), _structure_none)
    conv.register_structure_hook_func(lambda t: t is object, _passthrough)
    conv.register_unstructure_hook_factory(
        lambda t: isinstance(t, type) and issubclass(t, Enum), _enum_unstructure_factory
    )
    conv.register_unstructure_hook_factory(is_model_class, _model_unstructure_factory)
    conv.register_structure_hook_factory(is_model_class, _model_structure_factory)


def _set_to_list(items: Iterable[Any]) -> list[Any]:
    """Sets become lists, sorted when their (unstructured) items allow it, so the JSON is stable."""
    result = list(items)
    with contextlib.suppress(TypeError):
        result.sort()
    return result


def make_json_converter(**kwargs: Any) -> cattrs.Converter:
    """A new JSON converter configured like :data:`converter`; ``kwargs`` go to ``cattrs.Converter``."""
    overrides: dict[type, Callable[[Any], Any]] = {Sequence: list, AbstractSet: _set_to_list}
    conv = make_converter(unstruct_collection_overrides=overrides, **kwargs)
    configure(conv)
    return conv


converter: cattrs.Converter = make_json_converter()
"""The engine's converter. Unstructures to JSON types and structures back."""


# --- JSON verification -----------------------------------------------------------------------


class _NotJson(Exception):
    """``problem`` found at the value reached through ``keys`` (innermost last once complete)."""

    def __init__(self, problem: str) -> None:
        super().__init__(problem)
        self.problem = problem
        self.keys: list[object] = []  # filled in while the error unwinds, innermost first

    def inside(self, key: object) -> _NotJson:
        self.keys.append(key)
        return self

    def path(self, root: str) -> str:
        """``root['a'][2]``, shortened in the middle when deep, each key shown bounded."""
        keys = [f"[{shown(k)}]" for k in reversed(self.keys)]
        if len(keys) > 2 * _PATH_ENDS:
            keys = [*keys[:_PATH_ENDS], f"...({len(keys) - 2 * _PATH_ENDS} levels)...", *keys[-_PATH_ENDS:]]
        return clip(root + "".join(keys), 2 * MAX_SHOWN)


_PATH_ENDS = 4  # keys shown at each end of a deep path
_MAX_JSON_INT = 10**4300 - 1  # Python writes no int of more digits as text (int_max_str_digits)


def _type_name(value: object) -> str:
    cls = type(value)
    if cls.__module__ == "builtins":
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_str(text: str) -> str:
    if "\x00" in text:
        raise _NotJson("string contains a NUL character (\\x00), which PostgreSQL cannot store")
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise _NotJson("string contains a lone surrogate (not valid UTF-8)") from None
    return text


def _check_int(number: int) -> int:
    if not -_MAX_JSON_INT <= number <= _MAX_JSON_INT:
        raise _NotJson("int of more than 4300 digits is too large to write as JSON")
    return number


def _check_key(key: object, exact: bool) -> str:
    if type(key) is str or (not exact and isinstance(key, str)):
        return _check_str(str.__str__(key))
    if isinstance(key, int) and not isinstance(key, bool) and (not exact or type(key) is int):
        return str(_check_int(int.__int__(key)))
    raise _NotJson(f"dict key {shown(key)} of type {_type_name(key)} is not a str or int")


def _check_dict(value: dict[object, object], exact: bool) -> dict[str, JSON]:
    result: dict[str, JSON] = {}
    for key, item in value.items():
        try:
            result[_check_key(key, exact)] = _check(item, exact)
        except _NotJson as exc:
            raise exc.inside(key) from None
    return result


def _check_list(items: list[object] | tuple[object, ...], exact: bool) -> list[JSON]:
    result: list[JSON] = []
    for index, item in enumerate(items):
        try:
            result.append(_check(item, exact))
        except _NotJson as exc:
            raise exc.inside(index) from None
    return result


def _check(value: object, exact: bool) -> JSON:
    """Copy ``value`` as pure JSON, or raise :class:`_NotJson` (its ``path`` names the offender).

    With ``exact``, only the exact JSON types pass (the fast path for values already JSON);
    otherwise subclasses of str/int/float are converted to their base type.
    """
    if value is None or type(value) is bool:
        return value
    if isinstance(value, str) and (type(value) is str or not exact):
        return _check_str(str.__str__(value))
    if isinstance(value, int) and not isinstance(value, bool) and (type(value) is int or not exact):
        return _check_int(int.__int__(value))
    if isinstance(value, float) and (type(value) is float or not exact):
        if not math.isfinite(value):
            raise _NotJson(f"float {value!r} is not finite (JSON has no NaN/Infinity)")
        return float.__float__(value)
    if type(value) is dict or (not exact and isinstance(value, dict)):
        return _check_dict(value, exact)
    if type(value) in (list, tuple) or (not exact and isinstance(value, (list, tuple))):
        return _check_list(value, exact)  # type: ignore[arg-type]
    raise _NotJson(f"object of type {_type_name(value)} is not JSON-serialisable")


_SUPPORTED = (
    "supported: JSON types, attrs classes, dataclasses, pydantic models, datetime/pendulum, date, "
    "UUID, Decimal, enums and lists/tuples/sets/dicts of these"
)


def _unstructure(value: object, root: str) -> JSON:
    try:
        return converter.unstructure(value)
    except RecursionError:
        raise SerializationError(f"cannot serialise {root}: nested too deeply (or cyclic)") from None
    except Exception as exc:
        raise SerializationError(
            f"cannot serialise {root} of type {_type_name(value)}: {type(exc).__name__}: {clip(str(exc))}"
        ) from exc


def to_json(value: object, *, root: str = "value") -> JSON:
    """Unstructure ``value`` (by its runtime type) to pure JSON types, or raise SerializationError.

    ``root`` names the value in error messages, e.g. ``result`` gives ``result['a'][2]``.
    """
    try:
        return _check(value, exact=True)
    except _NotJson:
        pass
    except RecursionError:
        raise SerializationError(f"cannot serialise {root}: nested too deeply (or cyclic)") from None
    unstructured = _unstructure(value, root)
    try:
        return _check(unstructured, exact=False)
    except _NotJson as exc:
        raise SerializationError(f"cannot serialise {exc.path(root)}: {exc.problem} ({_SUPPORTED})") from None
    except RecursionError:
        raise SerializationError(f"cannot serialise {root}: nested too deeply (or cyclic)") from None


def annotation_name(annotation: object) -> str:
    """A short readable name for a type or typing form (``Signup``, ``list[int]``)."""
    if isinstance(annotation, type):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _format_exception(exc: BaseException, type_: type | None) -> str:
    if isinstance(exc, ModelValidationError):
        return f"invalid {exc.model.__qualname__} ({exc})"
    return format_exception(exc, type_)


def from_json(data: JSON, annotation: object = None) -> Any:
    """Structure JSON ``data`` as ``annotation``; without one (None/Any/object), return it as-is."""
    if annotation in _NO_ANNOTATION:
        return data
    try:
        return converter.structure(data, annotation)  # type: ignore[arg-type]
    except Exception as exc:
        lines = transform_error(exc, path="$", format_exception=_format_exception)
        details = clip("; ".join(lines), 2 * MAX_SHOWN)
        raise SerializationError(
            f"cannot structure JSON as {annotation_name(annotation)}: {details}"
        ) from exc


def round_trip(value: object, annotation: object = None) -> Any:
    """``from_json(to_json(value), annotation)``: what a workflow sees, first run and replay alike."""
    return from_json(to_json(value), annotation)


# --- return annotations ----------------------------------------------------------------------


def _has_typevar(hint: object) -> bool:
    if isinstance(hint, (typing.TypeVar, typing.ParamSpec)):
        return True
    return any(_has_typevar(arg) for arg in typing.get_args(hint))


def return_annotation(fn: object) -> Any:
    """The resolved return annotation of callable ``fn``, or None when it has none usable.

    Unwraps ``functools.partial``; a class is its own return annotation; a callable object uses
    its ``__call__``. Unresolvable hints, ``Any``/``object`` and hints with TypeVars give None.
    """
    target = fn
    while isinstance(target, functools.partial):
        target = target.func
    if isinstance(target, type):
        return target
    if not (inspect.isfunction(target) or inspect.ismethod(target)):
        target = getattr(target, "__call__", None)  # noqa: B004 - we want the bound __call__
        if target is None:
            return None
    try:
        hint = typing.get_type_hints(target).get("return")
    except Exception:
        return None
    if hint in _NO_ANNOTATION or _has_typevar(hint):
        return None
    return hint


# --- JSON text ---------------------------------------------------------------------------------


def dumps(value: object) -> str:
    """Serialise ``value`` (via :func:`to_json`) to compact JSON text."""
    return json.dumps(to_json(value), separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def loads(text: str | bytes | bytearray) -> JSON:
    """Parse JSON text; malformed text raises SerializationError."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise SerializationError(f"invalid JSON text: {exc}") from exc
