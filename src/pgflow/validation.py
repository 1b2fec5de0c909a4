"""Input and event-data validation (SPEC §1 ``input=``, §2 ``WaitFor(schema=)``).

A schema is None (JSON only), an attrs class/dataclass (strict cattrs), a pydantic-v2-like class
(``model_validate``) or a callable; this module validates, stores and rebuilds values for each.
"""

from __future__ import annotations

import dataclasses
import math
import re
import threading
from collections import deque
from collections.abc import Callable, Mapping, MutableMapping, MutableSequence, MutableSet, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, get_args, get_origin

import attrs
import cattrs
from cattrs.errors import ForbiddenExtraKeysError
from cattrs.gen import mapping_structure_factory
from cattrs.v import format_exception, transform_error

from pgflow import serde
from pgflow.arguments import clip, shown
from pgflow.errors import InvalidInputError, SerializationError, WorkflowDefinitionError
from pgflow.serde import JSON, StrictTypeError

__all__ = ["Validator", "make_validator", "rebuild", "schema_kind", "to_stored", "validate"]

Validator = Callable[[Any], Any]
"""``validator(raw) -> value``; raises :class:`InvalidInputError` to reject."""


# --- the strict converter --------------------------------------------------------------------


def _strict_str(value: object, cl: Any) -> Any:
    if not isinstance(value, str):
        raise StrictTypeError(f"expected str, got {type(value).__name__}")
    return value if cl is str else cl(value)  # str subclasses (str enums) are built by their class


def _strict_int(value: object, cl: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise StrictTypeError(f"expected int, got {type(value).__name__}")
    return value if cl is int else cl(value)  # int subclasses (IntEnum) are built by their class


def _strict_float(value: object, cl: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise StrictTypeError(f"expected float, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number")
    return float(value) if cl is float else cl(value)


def _strict_bool(value: object, _: object) -> bool:
    if not isinstance(value, bool):
        raise StrictTypeError(f"expected bool, got {type(value).__name__}")
    return value


_SEQUENCES = {list, tuple, deque, Sequence, MutableSequence}
_SETS = {set, frozenset, AbstractSet, MutableSet}
_bypass = threading.local()  # types whose default cattrs hook is being fetched by _strict_collection


def _is_guarded_collection(t: Any) -> bool:
    origin = get_origin(t) or t
    return (origin in _SEQUENCES or origin in _SETS) and t not in getattr(_bypass, "types", ())


def _strict_collection(t: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Wrap cattrs' own hook for ``t``: only a list/tuple (or set, for set types) is accepted."""
    types: set[Any] = _bypass.__dict__.setdefault("types", set())
    types.add(t)
    try:
        inner = conv.get_structure_hook(t, cache_result=False)
    finally:
        types.discard(t)
    origin = get_origin(t) or t
    allowed: tuple[type, ...] = (list, tuple, set, frozenset) if origin in _SETS else (list, tuple)

    def structure_collection(value: Any, cl: Any) -> Any:
        if not isinstance(value, allowed):
            raise StrictTypeError(f"expected a list, got {type(value).__name__}")
        return inner(value, cl)

    return structure_collection


def _is_record_class(t: Any) -> bool:
    """An attrs class or dataclass (possibly a parametrised generic one)."""
    origin = get_origin(t) or t
    return isinstance(origin, type) and (attrs.has(origin) or dataclasses.is_dataclass(origin))


def _strict_class(cl: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """Structure an attrs class/dataclass from a mapping, or from an instance (re-validated)."""
    inner = conv.gen_structure_attrs_fromdict(cl)
    origin = get_origin(cl) or cl

    def structure_class(value: Any, t: Any) -> Any:
        if isinstance(value, origin):
            value = serde.converter.unstructure(value, unstructure_as=cl)
        elif not isinstance(value, Mapping):
            raise StrictTypeError(
                f"expected an object (mapping) or {origin.__name__} instance, got {type(value).__name__}"
            )
        return inner(value, t)

    return structure_class


_MAPPINGS = {dict, Mapping, MutableMapping}


def _is_int_keyed_mapping(t: Any) -> bool:
    args = get_args(t)
    key = args[0] if len(args) == 2 else None
    return get_origin(t) in _MAPPINGS and isinstance(key, type) and issubclass(key, int) and key is not bool


def _json_int_key(key: object) -> object:
    """JSON object keys are strings: ``"12"`` is the int key 12 (canonical digits only)."""
    if isinstance(key, str) and re.fullmatch(r"-?(0|[1-9][0-9]*)", key):
        return int(key)
    return key


def _int_keyed_mapping(t: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    """``dict[int, V]``: accept the string keys JSON forces on int keys, strictly otherwise."""
    inner = mapping_structure_factory(t, conv, structure_to=dict)

    def structure_mapping(value: Any, cl: Any) -> Any:
        if isinstance(value, Mapping):
            value = {_json_int_key(k): v for k, v in value.items()}
        return inner(value, cl)

    return structure_mapping


def _make_strict_converter() -> cattrs.Converter:
    conv = serde.make_json_converter(forbid_extra_keys=True, prefer_attrib_converters=True)
    for cl, hook in ((str, _strict_str), (int, _strict_int), (float, _strict_float), (bool, _strict_bool)):
        conv.register_structure_hook(cl, hook)
    conv.register_structure_hook_factory(_is_guarded_collection, _strict_collection)
    conv.register_structure_hook_factory(_is_int_keyed_mapping, _int_keyed_mapping)
    conv.register_structure_hook_factory(_is_record_class, _strict_class)
    return conv


strict_converter: cattrs.Converter = _make_strict_converter()
"""Validation converter: like :data:`serde.converter`, but never coerces and forbids extra keys."""


# --- error messages --------------------------------------------------------------------------


def _format_exception(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, StrictTypeError | serde.ModelValidationError):
        return str(exc)
    if isinstance(exc, ForbiddenExtraKeysError):
        names = ", ".join(repr(k) for k in sorted(exc.extra_fields))
        return f"unknown field(s) {names}: extra keys are not allowed"
    if isinstance(exc, KeyError):
        return "required field missing"
    if isinstance(exc, ValueError) and str(exc):
        if type_ is None:
            return f"invalid value: {exc}"
        return f"invalid value for {serde.annotation_name(type_)}: {exc}"
    result = format_exception(exc, type_)
    if result.startswith("unknown error"):
        return f"{type(exc).__name__}: {exc}"
    return result


def _field_errors(exc: BaseException) -> list[str]:
    """``['email: expected str, got int', ...]``: one line per bad field, from a cattrs error."""
    errors = []
    for line in transform_error(exc, path="$", format_exception=_format_exception):
        message, _, path = line.rpartition(" @ ")
        field = path.removeprefix("$").removeprefix(".")
        errors.append(f"{field}: {message}" if field else message)
    return errors


MAX_ERROR = 300  # characters of one field error; a validator's message may embed a huge value
MAX_MESSAGE = 500  # characters of the whole message


def _reject(errors: list[str]) -> InvalidInputError:
    errors = [clip(e, MAX_ERROR) for e in errors]
    return InvalidInputError(clip("invalid value: " + "; ".join(errors), MAX_MESSAGE), errors)


# --- validators per kind ---------------------------------------------------------------------


def schema_kind(schema: object) -> str:
    """``"json"``, ``"class"`` (attrs/dataclass), ``"model"`` (pydantic-like) or ``"callable"``."""
    if schema is None:
        return "json"
    if _is_record_class(schema) or get_origin(schema) is not None:
        return "class"  # also typing forms such as list[Item] or Optional[int], structured strictly
    if isinstance(schema, type) and callable(getattr(schema, "model_validate", None)):
        return "model"
    if callable(schema):
        return "callable"
    raise WorkflowDefinitionError(
        f"invalid schema {shown(schema)}: expected None, an attrs class, a dataclass, a pydantic model "
        "or a callable f(raw) -> value"
    )


def _validate_json(raw: Any) -> Any:
    try:
        return serde.to_json(raw, root="input")
    except SerializationError as exc:
        raise _reject([str(exc)]) from exc


def _class_validator(cl: Any) -> Validator:
    def validate_class(raw: Any) -> Any:
        try:
            return strict_converter.structure(raw, cl)
        except Exception as exc:
            raise _reject(_field_errors(exc)) from exc

    return validate_class


def _model_validator(model: Any) -> Validator:
    def validate_model(raw: Any) -> Any:
        try:
            return model.model_validate(raw)
        except Exception as exc:
            raise _reject(serde.model_errors(exc)) from exc

    return validate_model


def _callable_validator(fn: Callable[[Any], Any]) -> Validator:
    def validate_callable(raw: Any) -> Any:
        try:
            return fn(raw)
        except InvalidInputError as exc:
            raise _reject(exc.errors or [str(exc)]) from exc
        except Exception as exc:
            raise _reject([f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__]) from exc

    return validate_callable


def make_validator(schema: object) -> Validator:
    """The validator for ``schema`` (see module doc); an unusable schema is a WorkflowDefinitionError."""
    kind = schema_kind(schema)
    if kind == "json":
        return _validate_json
    if kind == "class":
        return _class_validator(schema)
    if kind == "model":
        return _model_validator(schema)
    return _callable_validator(schema)  # type: ignore[arg-type]


def validate(validator: Validator | None, raw: Any, what: str) -> Any:
    """Run ``validator`` (None: JSON only) on ``raw``; rejection names ``what`` in its message."""
    try:
        return (validator or _validate_json)(raw)
    except InvalidInputError as exc:
        message = clip(f"invalid {what}: " + "; ".join(exc.errors), MAX_MESSAGE)
        raise InvalidInputError(message, exc.errors) from exc


def to_stored(schema: object, raw: Any, what: str = "value") -> JSON:
    """Validate ``raw`` against ``schema`` and return the validated value as JSON, for storage."""
    value = validate(make_validator(schema), raw, what)
    kind = schema_kind(schema)
    try:
        if kind == "class":
            return serde.to_json(serde.converter.unstructure(value, unstructure_as=schema), root=what)
        if kind == "model":
            return serde.to_json(serde.dump_model(value), root=what)
        return serde.to_json(value, root=what)
    except SerializationError as exc:
        raise InvalidInputError(clip(f"invalid {what}: {exc}", MAX_MESSAGE), [str(exc)]) from exc


def rebuild(schema: object, stored: JSON, what: str = "value") -> Any:
    """Rebuild the validated value from its stored JSON, identically on every replay. A callable
    validator already ran once, when the value arrived: its stored result is the value."""
    kind = schema_kind(schema)
    if kind in ("json", "callable"):
        return stored
    try:
        if kind == "class":
            return serde.converter.structure(stored, schema)  # type: ignore[arg-type]
        return schema.model_validate(stored)  # type: ignore[attr-defined]
    except Exception as exc:
        if kind == "model":
            problem = str(serde.ModelValidationError(schema, serde.model_errors(exc)))  # type: ignore[arg-type]
        else:
            problem = f"{type(exc).__name__}: {clip(str(exc))}"
        raise SerializationError(f"cannot rebuild {what} from its stored JSON: {problem}") from exc
