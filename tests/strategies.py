"""Shared Hypothesis strategies: every type the engine's converter supports, with its annotation.

``typed_values()`` draws ``(value, annotation)`` pairs such that
``serde.round_trip(value, annotation) == value``; record classes (attrs/dataclasses) are drawn by
``records()`` and satisfy ``round_trip(x, type(x)) == x``.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import attrs
import pendulum
from hypothesis import strategies as st

# -- example types -----------------------------------------------------------------------------


class Tier(enum.Enum):
    """A plain enum with string values."""

    FREE = "free"
    PRO = "pro"


class Priority(enum.IntEnum):
    """An int enum."""

    LOW = 1
    HIGH = 2


class Shade(str, enum.Enum):
    """A str-mixin enum."""

    LIGHT = "light"
    DARK = "dark"


@attrs.frozen
class Address:
    """A small attrs class."""

    street: str
    zip_code: int


@attrs.frozen
class Customer:
    """An attrs class with nested and special-typed fields."""

    id: UUID
    name: str
    joined: datetime
    balance: Decimal
    tier: Tier
    tags: list[str] = attrs.field(factory=list)
    address: Address | None = None
    birthday: date | None = None
    scores: dict[str, float] = attrs.field(factory=dict)


@dataclasses.dataclass(frozen=True)
class LineItem:
    """A small dataclass."""

    sku: str
    qty: int
    price: Decimal


@dataclasses.dataclass
class Order:
    """A dataclass nesting dataclasses, attrs classes and containers."""

    id: int
    items: list[LineItem]
    placed: pendulum.DateTime
    priority: Priority
    shade: Shade
    ship_to: Address
    notes: tuple[str, ...] = ()
    codes: frozenset[int] = frozenset()
    customers: dict[int, Customer] = dataclasses.field(default_factory=dict)


# -- scalars -------------------------------------------------------------------------------------

texts = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=12)
finite_floats = st.floats(allow_nan=False, allow_infinity=False)
decimals = st.decimals(allow_nan=False)
fixed_offsets = st.integers(min_value=-(24 * 60 - 1), max_value=24 * 60 - 1).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
aware_datetimes = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=fixed_offsets
)
pendulum_datetimes = aware_datetimes.map(pendulum.instance)
dates = st.dates()

SCALARS: dict[Any, st.SearchStrategy[Any]] = {
    int: st.integers(),
    float: finite_floats,
    str: texts,
    bool: st.booleans(),
    datetime: aware_datetimes,
    pendulum.DateTime: pendulum_datetimes,
    date: dates,
    UUID: st.uuids(),
    Decimal: decimals,
    Tier: st.sampled_from(Tier),
    Priority: st.sampled_from(Priority),
    Shade: st.sampled_from(Shade),
}
HASHABLE = [int, str, bool, date, UUID, Decimal, Tier, Priority, Shade]


# -- records -------------------------------------------------------------------------------------


def _opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


addresses = st.builds(Address, street=texts, zip_code=st.integers())
customers = st.builds(
    Customer,
    id=st.uuids(),
    name=texts,
    joined=aware_datetimes,
    balance=decimals,
    tier=st.sampled_from(Tier),
    tags=st.lists(texts, max_size=3),
    address=_opt(addresses),
    birthday=_opt(dates),
    scores=st.dictionaries(texts, finite_floats, max_size=3),
)
line_items = st.builds(LineItem, sku=texts, qty=st.integers(), price=decimals)
orders = st.builds(
    Order,
    id=st.integers(),
    items=st.lists(line_items, max_size=3),
    placed=pendulum_datetimes,
    priority=st.sampled_from(Priority),
    shade=st.sampled_from(Shade),
    ship_to=addresses,
    notes=st.lists(texts, max_size=3).map(tuple),
    codes=st.frozensets(st.integers(), max_size=3),
    customers=st.dictionaries(st.integers(), customers, max_size=2),
)
RECORDS: dict[Any, st.SearchStrategy[Any]] = {
    Address: addresses,
    Customer: customers,
    LineItem: line_items,
    Order: orders,
}


@st.composite
def records(draw: st.DrawFn) -> Any:
    """An instance of one of the example attrs classes or dataclasses."""
    return draw(st.one_of(*RECORDS.values()))


# -- annotated values ----------------------------------------------------------------------------

leaf_annotations = st.sampled_from([*SCALARS, *RECORDS])
annotations: st.SearchStrategy[Any] = st.recursive(
    leaf_annotations,
    lambda inner: st.one_of(
        inner.map(lambda t: list[t]),  # type: ignore[valid-type]
        inner.map(lambda t: tuple[t, ...]),  # type: ignore[valid-type]
        st.sampled_from(HASHABLE).map(lambda t: set[t]),  # type: ignore[valid-type]
        st.sampled_from(HASHABLE).map(lambda t: frozenset[t]),  # type: ignore[valid-type]
        inner.map(lambda t: dict[str, t]),  # type: ignore[valid-type]
        inner.map(lambda t: dict[int, t]),  # type: ignore[valid-type]
        inner.map(lambda t: t | None),
    ),
    max_leaves=3,
)


def values_for(annotation: Any) -> st.SearchStrategy[Any]:
    """A strategy of values of ``annotation`` (one produced by ``annotations``)."""
    if annotation in SCALARS:
        return SCALARS[annotation]
    if annotation in RECORDS:
        return RECORDS[annotation]
    origin = getattr(annotation, "__origin__", None)
    args = getattr(annotation, "__args__", ())
    if origin is list:
        return st.lists(values_for(args[0]), max_size=3)
    if origin is tuple:
        return st.lists(values_for(args[0]), max_size=3).map(tuple)
    if origin is set:
        return st.sets(values_for(args[0]), max_size=3)
    if origin is frozenset:
        return st.frozensets(values_for(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(values_for(args[0]), values_for(args[1]), max_size=3)
    if type(None) in args:  # Optional[T]
        return st.none() | values_for(next(a for a in args if a is not type(None)))
    raise AssertionError(f"no strategy for {annotation!r}")


@st.composite
def typed_values(draw: st.DrawFn) -> tuple[Any, Any]:
    """``(value, annotation)``: a value of any supported type, with the annotation that rebuilds it."""
    annotation = draw(annotations)
    return draw(values_for(annotation)), annotation


json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | finite_floats | texts,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(texts, inner, max_size=4),
    max_leaves=12,
)
"""Pure JSON values (what ``to_json`` produces)."""
