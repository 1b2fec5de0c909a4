"""The engine's converter: values <-> pure JSON, errors naming type and path, return annotations."""

from __future__ import annotations

import asyncio
import functools
import math
import socket
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any, TypeVar
from uuid import UUID
from zoneinfo import ZoneInfo

import attrs
import pendulum
import pytest
from hypothesis import given

from pgflow import serde
from pgflow.errors import SerializationError
from strategies import (
    Address,
    Customer,
    LineItem,
    Order,
    Priority,
    Shade,
    Tier,
    json_values,
    records,
    typed_values,
)

T = TypeVar("T")


def _is_pure_json(value: object) -> bool:
    if value is None or type(value) in (bool, int, str):
        return True
    if type(value) is float:
        return math.isfinite(value)
    if type(value) is list:
        return all(_is_pure_json(v) for v in value)
    if type(value) is dict:
        return all(type(k) is str and _is_pure_json(v) for k, v in value.items())
    return False


# -- round trips (Hypothesis) ----------------------------------------------------------------------


@given(records())
def test_records_round_trip_with_their_type(value: Any) -> None:
    """attrs classes and dataclasses (nested, with special fields) survive round_trip(x, type(x))."""
    result = serde.round_trip(value, type(value))
    assert result == value
    assert type(result) is type(value)


@given(typed_values())
def test_typed_values_round_trip(pair: tuple[Any, Any]) -> None:
    """Every supported type, alone or in containers/Optional, survives round_trip with its annotation."""
    value, annotation = pair
    assert serde.round_trip(value, annotation) == value


@given(typed_values())
def test_to_json_output_is_pure_json(pair: tuple[Any, Any]) -> None:
    """to_json produces only dict/list/str/int/finite float/bool/None, with str keys."""
    assert _is_pure_json(serde.to_json(pair[0]))


@given(typed_values())
def test_dumps_loads_round_trip(pair: tuple[Any, Any]) -> None:
    """JSON text from dumps, parsed by loads, structures back to the original value."""
    value, annotation = pair
    assert serde.from_json(serde.loads(serde.dumps(value)), annotation) == value


@given(json_values)
def test_plain_json_round_trips_unchanged(value: Any) -> None:
    """Without an annotation, a pure JSON value comes back equal."""
    assert serde.round_trip(value) == value
    assert serde.loads(serde.dumps(value)) == value


@given(records())
def test_round_trip_is_idempotent(value: Any) -> None:
    """A round-tripped value serialises to the same JSON as the original (replay sees the same)."""
    assert serde.to_json(serde.round_trip(value, type(value))) == serde.to_json(value)


# -- specific encodings --------------------------------------------------------------------------


def test_special_types_encoding() -> None:
    """datetime/date → ISO-8601, UUID and Decimal → str, enums → value, sets/tuples → lists."""
    uid = UUID("12345678-1234-5678-1234-567812345678")
    value = {
        "when": datetime(2024, 5, 1, 12, 30, tzinfo=timezone(timedelta(hours=2))),
        "day": date(2024, 5, 1),
        "id": uid,
        "amount": Decimal("10.50"),
        "tier": Tier.PRO,
        "prio": Priority.HIGH,
        "shade": Shade.DARK,
        "tuple": (1, 2),
        "set": {3},
    }
    assert serde.to_json(value) == {
        "when": "2024-05-01T12:30:00+02:00",
        "day": "2024-05-01",
        "id": str(uid),
        "amount": "10.50",
        "tier": "pro",
        "prio": 2,
        "shade": "dark",
        "tuple": [1, 2],
        "set": [3],
    }
    assert type(serde.to_json(Priority.HIGH)) is int
    assert type(serde.to_json(Shade.DARK)) is str


def test_naive_datetime_is_treated_as_utc() -> None:
    """A naive datetime serialises as UTC and comes back aware."""
    naive = datetime(2024, 1, 2, 3, 4, 5)
    assert serde.to_json(naive) == "2024-01-02T03:04:05+00:00"
    assert serde.from_json("2024-01-02T03:04:05", datetime) == naive.replace(tzinfo=UTC)


def test_pendulum_datetime_structures_as_pendulum() -> None:
    """A pendulum DateTime field comes back as a pendulum DateTime at the same instant."""
    value = pendulum.datetime(2024, 3, 31, 1, 30, tz="Europe/Paris")
    result = serde.round_trip(value, pendulum.DateTime)
    assert isinstance(result, pendulum.DateTime)
    assert result == value


def test_zoneinfo_datetime_keeps_instant_and_offset() -> None:
    """A zoneinfo datetime comes back with the same instant and UTC offset (the zone name is not kept)."""
    value = datetime(2024, 11, 3, 1, 30, fold=1, tzinfo=ZoneInfo("America/New_York"))
    result = serde.round_trip(value, datetime)
    assert result.timestamp() == value.timestamp()
    assert result.utcoffset() == value.utcoffset()


def test_int_dict_keys_become_strings_and_structure_back() -> None:
    """int dict keys are written as strings and rebuilt as ints by a dict[int, ...] annotation."""
    assert serde.to_json({1: "a"}) == {"1": "a"}
    assert serde.round_trip({1: "a"}, dict[int, str]) == {1: "a"}


def test_nested_record_encoding() -> None:
    """A dataclass nesting attrs classes unstructures to plain dicts keyed by field name."""
    order = Order(
        id=1,
        items=[LineItem("sku", 2, Decimal("1.5"))],
        placed=pendulum.datetime(2024, 1, 1),
        priority=Priority.LOW,
        shade=Shade.LIGHT,
        ship_to=Address("Main St", 12345),
    )
    data = serde.to_json(order)
    assert data["items"] == [{"sku": "sku", "qty": 2, "price": "1.5"}]
    assert data["ship_to"] == {"street": "Main St", "zip_code": 12345}
    assert data["placed"] == "2024-01-01T00:00:00+00:00"
    assert data["notes"] == []


def test_from_json_without_annotation_returns_data_as_is() -> None:
    """from_json with no annotation (None, Any, object) returns the JSON unchanged."""
    data = {"a": [1, "2"]}
    for annotation in (None, Any, object):
        assert serde.from_json(data, annotation) is data


def test_from_json_optional_and_none() -> None:
    """Optional annotations accept None; a '-> None' annotation accepts only None."""
    assert serde.from_json(None, Address | None) is None
    assert serde.from_json(None, type(None)) is None
    with pytest.raises(SerializationError):
        serde.from_json(5, type(None))


class LookAlike:
    """A pydantic-v2 look-alike (duck-typed: no pydantic needed), whose model_dump has no by_alias."""

    def __init__(self, name: str, count: int) -> None:
        self.name, self.count = name, count

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LookAlike) and (self.name, self.count) == (other.name, other.count)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def model_validate(cls, raw: Any) -> LookAlike:
        if isinstance(raw, LookAlike):
            return raw
        if not isinstance(raw, dict) or not isinstance(raw.get("count"), int):
            raise ValueError("count: must be an int")
        return cls(str(raw["name"]), raw["count"])

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return {"name": self.name, "count": self.count}


@attrs.frozen
class HasLookAlike:
    inner: LookAlike
    more: list[LookAlike | None]


def test_model_look_alikes_round_trip_duck_typed() -> None:
    """A class with model_dump/model_validate (no pydantic) round-trips alone, in containers and
    in attrs fields, through its model_dump(mode="json") form."""
    one = LookAlike("a", 1)
    assert serde.to_json(one) == {"name": "a", "count": 1}
    assert serde.round_trip(one, LookAlike) == one
    assert serde.round_trip({"k": [one]}, dict[str, list[LookAlike]]) == {"k": [one]}
    value = HasLookAlike(one, [None, LookAlike("b", 2)])
    assert serde.to_json(value) == {
        "inner": {"name": "a", "count": 1},
        "more": [None, {"name": "b", "count": 2}],
    }
    assert serde.round_trip(value, HasLookAlike) == value


def test_model_look_alike_rejection_is_a_bounded_serialization_error() -> None:
    """What model_validate rejects becomes a SerializationError naming the model and the path."""
    with pytest.raises(
        SerializationError, match=r"invalid LookAlike \(ValueError: count: must be an int\) @ \$\[1\]"
    ):
        serde.from_json([{"name": "a", "count": 1}, {"name": "b", "count": "x" * 10_000}], list[LookAlike])
    with pytest.raises(SerializationError) as caught:
        serde.from_json({"name": "x" * 10_000}, LookAlike)
    assert len(str(caught.value)) < 600


# -- errors ----------------------------------------------------------------------------------------


def test_unserialisable_object_names_type_and_path() -> None:
    """An arbitrary object deep inside a value fails with its type and path in the message."""
    with socket.socket() as sock, pytest.raises(SerializationError) as info:
        serde.to_json({"a": [1, 2, sock]}, root="result")
    assert "result['a'][2]" in str(info.value)
    assert "socket.socket" in str(info.value)


def test_lambda_is_unserialisable() -> None:
    """A function is not serialisable; the message names its type."""
    with pytest.raises(SerializationError, match="function"):
        serde.to_json([lambda: 1])


def test_arbitrary_class_inside_attrs_is_unserialisable() -> None:
    """An object of an arbitrary class inside an attrs field is rejected at the field's path."""

    class Opaque:
        pass

    @attrs.define
    class Holder:
        thing: Any

    with pytest.raises(SerializationError) as info:
        serde.to_json(Holder(Opaque()))
    assert "value['thing']" in str(info.value)
    assert "Opaque" in str(info.value)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_rejected(bad: float) -> None:
    """NaN and infinities are not JSON."""
    with pytest.raises(SerializationError, match="not finite"):
        serde.to_json({"x": bad})


def test_non_str_int_dict_keys_are_rejected() -> None:
    """dict keys other than str/int (e.g. float) are rejected, naming the key."""
    with pytest.raises(SerializationError, match=r"dict key 1\.5"):
        serde.to_json({1.5: "x"})


def test_strings_postgres_cannot_store_are_rejected() -> None:
    """NUL characters and lone surrogates fail early, on every store alike."""
    with pytest.raises(SerializationError, match="NUL"):
        serde.to_json("a\x00b")
    with pytest.raises(SerializationError, match="surrogate"):
        serde.to_json({"k": "\ud800"})


def test_cyclic_value_is_rejected() -> None:
    """A self-referencing list fails with SerializationError, not RecursionError."""
    cyclic: list[Any] = []
    cyclic.append(cyclic)
    with pytest.raises(SerializationError):
        serde.to_json(cyclic)


def test_from_json_failure_is_serialization_error() -> None:
    """JSON that does not fit the annotation raises SerializationError naming the type."""
    with pytest.raises(SerializationError, match="Address"):
        serde.from_json({"street": "x"}, Address)
    with pytest.raises(SerializationError):
        serde.from_json("not-a-uuid", UUID)


def test_dumps_is_compact_and_loads_rejects_bad_text() -> None:
    """dumps uses compact separators and keeps non-ASCII; loads wraps parse errors."""
    assert serde.dumps({"a": [1, "é"]}) == '{"a":[1,"é"]}'
    with pytest.raises(SerializationError):
        serde.loads("{nope")


def test_dumps_rejects_unserialisable() -> None:
    """dumps fails like to_json on values that are not serialisable."""
    with pytest.raises(SerializationError):
        serde.dumps({"x": object()})


# -- return annotations ------------------------------------------------------------------------------


def _make_address() -> Address:
    return Address("x", 1)


async def _async_customer() -> Customer:
    raise NotImplementedError


def _two_args(a: int, b: str) -> list[int]:
    return [a]


class _CallableObject:
    def __call__(self) -> dict[str, int]:
        return {}


def _identity(x: T) -> T:
    return x


def _no_annotation():  # type: ignore[no-untyped-def]
    return 1


def _returns_none() -> None:
    return None


def _unresolvable() -> NoSuchType:  # type: ignore[name-defined]  # noqa: F821
    raise NotImplementedError


def _generator() -> Iterator[int]:
    yield 1


def test_return_annotation_of_functions() -> None:
    """Plain and async functions give their declared return type."""
    assert serde.return_annotation(_make_address) is Address
    assert serde.return_annotation(_async_customer) is Customer
    assert asyncio.iscoroutinefunction(_async_customer)
    assert serde.return_annotation(_returns_none) is type(None)


def test_return_annotation_unwraps_partials_and_callables() -> None:
    """functools.partial (nested) and callable objects are unwrapped; a class is its own type."""
    partial = functools.partial(functools.partial(_two_args, 1), "b")
    assert serde.return_annotation(partial) == list[int]
    assert serde.return_annotation(_CallableObject()) == dict[str, int]
    assert serde.return_annotation(Address) is Address
    assert serde.return_annotation(Address.__init__) is type(None)


def test_return_annotation_none_when_unusable() -> None:
    """Missing, unresolvable, TypeVar and builtin annotations give None."""
    assert serde.return_annotation(_no_annotation) is None
    assert serde.return_annotation(_unresolvable) is None
    assert serde.return_annotation(_identity) is None
    assert serde.return_annotation(len) is None
    assert serde.return_annotation(lambda: 1) is None


def test_return_annotation_used_to_rebuild_step_result() -> None:
    """round_trip with a function's return annotation rebuilds the instance it returned."""
    value = _make_address()
    assert serde.round_trip(value, serde.return_annotation(_make_address)) == value
    assert serde.round_trip(value, serde.return_annotation(_no_annotation)) == {
        "street": "x",
        "zip_code": 1,
    }
