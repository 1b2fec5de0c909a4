"""Input/event validation (SPEC §1): strict attrs/dataclass structuring, pydantic-like, callables."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from hypothesis import given

from pgflow import serde, validation
from pgflow.errors import InvalidInputError, SerializationError, WorkflowDefinitionError
from strategies import Address, Customer, Tier, records

WHAT = "input of workflow 'onboard-user'"


@attrs.frozen
class Signup:
    """The SPEC §1 example input."""

    email: str
    plan: str = "free"


@attrs.frozen
class Profile:
    """Fields of several kinds, with a default, a converter and a nested class."""

    name: str = attrs.field(converter=str.strip)
    age: int
    height: float = 0.0
    active: bool = True
    tags: list[str] = attrs.field(factory=list)
    address: Address | None = None
    seen: datetime | None = None


@dataclasses.dataclass
class Point:
    """A dataclass input."""

    x: float
    y: float


def _errors(schema: object, raw: Any) -> list[str]:
    with pytest.raises(InvalidInputError) as info:
        validation.validate(validation.make_validator(schema), raw, WHAT)
    assert WHAT in str(info.value)
    return info.value.errors


def _valid(schema: object, raw: Any) -> Any:
    return validation.validate(validation.make_validator(schema), raw, WHAT)


# -- strictness ---------------------------------------------------------------------------------------


def test_int_for_str_is_rejected() -> None:
    """123 for a str field is an error naming the field, never coerced to '123'."""
    assert _errors(Signup, {"email": 123}) == ["email: expected str, got int"]


def test_str_for_int_and_bool_for_int_are_rejected() -> None:
    """'5' and True are not ints."""
    assert _errors(Profile, {"name": "a", "age": "5"}) == ["age: expected int, got str"]
    assert _errors(Profile, {"name": "a", "age": True}) == ["age: expected int, got bool"]


def test_int_for_float_is_accepted() -> None:
    """An int for a float field is fine (and becomes a float)."""
    point = _valid(Point, {"x": 1, "y": 2.5})
    assert point == Point(1.0, 2.5)
    assert type(point.x) is float


def test_bool_for_float_and_int_for_bool_are_rejected() -> None:
    """bool is not a number, and 1 is not a bool."""
    assert _errors(Point, {"x": True, "y": 0}) == ["x: expected float, got bool"]
    assert _errors(Profile, {"name": "a", "age": 1, "active": 1}) == ["active: expected bool, got int"]


def test_missing_field_is_reported() -> None:
    """A missing required field is named."""
    assert _errors(Signup, {}) == ["email: required field missing"]


def test_two_bad_fields_give_two_errors() -> None:
    """All errors are collected, not just the first."""
    errors = _errors(Profile, {"name": 1, "age": "x", "height": "tall"})
    assert len(errors) >= 2
    assert "age: expected int, got str" in errors
    assert "height: expected float, got str" in errors


def test_unknown_keys_are_rejected() -> None:
    """Extra keys are an error that says they are not allowed, alongside other errors."""
    errors = _errors(Signup, {"email": 1, "emial": "a@b.c"})
    assert "email: expected str, got int" in errors
    assert any("'emial'" in e and "not allowed" in e for e in errors)


def test_nested_and_list_errors_have_paths() -> None:
    """Errors inside nested classes and lists carry their path."""
    errors = _errors(Profile, {"name": "a", "age": 1, "tags": ["ok", 2], "address": {"street": 5}})
    assert "tags[1]: expected str, got int" in errors
    assert "address.street: expected str, got int" in errors
    assert "address.zip_code: required field missing" in errors


def test_string_for_list_is_rejected() -> None:
    """A str is not accepted for a list[str] field (no splitting into characters)."""
    assert _errors(Profile, {"name": "a", "age": 1, "tags": "abc"}) == ["tags: expected a list, got str"]


def test_non_mapping_input_is_rejected() -> None:
    """Input that is neither a mapping nor an instance is rejected with what was expected."""
    (error,) = _errors(Signup, "a@b.c")
    assert "Signup" in error and "got str" in error


def test_bad_datetime_and_enum_values_are_rejected() -> None:
    """An unparseable datetime string and an unknown enum value name their fields."""
    errors = _errors(
        Customer,
        {
            "id": "12345678-1234-5678-1234-567812345678",
            "name": "n",
            "joined": "yesterday",
            "balance": "1.5",
            "tier": "gold",
        },
    )
    assert len(errors) == 2
    assert any(e.startswith("joined: ") for e in errors)
    assert any(e.startswith("tier: ") and "gold" in e for e in errors)


# -- what validation produces ---------------------------------------------------------------------


def test_defaults_are_applied_and_stored() -> None:
    """Defaults fill missing optional fields, and the stored JSON has them."""
    assert _valid(Signup, {"email": "a@b.c"}) == Signup("a@b.c", "free")
    assert validation.to_stored(Signup, {"email": "a@b.c"}, WHAT) == {"email": "a@b.c", "plan": "free"}


def test_converters_are_applied() -> None:
    """attrs converters run on the raw value; the converted value is stored."""
    assert _valid(Profile, {"name": "  Ann ", "age": 3}).name == "Ann"
    assert validation.to_stored(Profile, {"name": "  Ann ", "age": 3}, WHAT)["name"] == "Ann"


def test_failing_converter_is_rejected() -> None:
    """A converter that raises rejects the input with its message."""
    (error,) = _errors(Profile, {"name": 5, "age": 3})
    assert "strip" in error


def test_instance_input_is_accepted_and_revalidated() -> None:
    """An instance of the class is accepted; an instance with a bad field is still rejected."""
    assert _valid(Signup, Signup("a@b.c")) == Signup("a@b.c")
    assert _valid(Profile, {"name": "a", "age": 1, "address": Address("s", 1)}).address == Address("s", 1)
    assert _errors(Signup, Signup(123)) == ["email: expected str, got int"]  # type: ignore[arg-type]


def test_datetime_input_accepts_iso_strings_and_instances() -> None:
    """A datetime field takes an ISO string or a datetime; naive means UTC."""
    expected = datetime(2024, 1, 1, tzinfo=UTC)
    assert _valid(Profile, {"name": "a", "age": 1, "seen": "2024-01-01T00:00:00"}).seen == expected
    assert _valid(Profile, {"name": "a", "age": 1, "seen": expected}).seen == expected


def test_stored_value_rebuilds_identically() -> None:
    """rebuild(to_stored(raw)) equals the validated value, every time."""
    raw = {
        "name": " a ",
        "age": 1,
        "seen": "2024-01-01T00:00:00+02:00",
        "address": {"street": "s", "zip_code": 1},
    }
    stored = validation.to_stored(Profile, raw, WHAT)
    assert serde.loads(serde.dumps(stored)) == stored
    assert validation.rebuild(Profile, stored) == _valid(Profile, raw)
    assert validation.rebuild(Profile, stored) == validation.rebuild(Profile, stored)


@given(records())
def test_records_validate_from_their_json(value: Any) -> None:
    """Any supported record's JSON (and the record itself) passes strict validation back to it."""
    assert _valid(type(value), serde.to_json(value)) == value
    assert _valid(type(value), value) == value
    assert validation.rebuild(type(value), validation.to_stored(type(value), value, WHAT)) == value


def test_typing_forms_are_structured_strictly() -> None:
    """A typing form such as list[Address] is validated strictly too."""
    assert _valid(list[Address], [{"street": "s", "zip_code": 1}]) == [Address("s", 1)]
    assert _errors(list[int], [1, "2"]) == ["[1]: expected int, got str"]


# -- no schema ---------------------------------------------------------------------------------------


def test_no_schema_accepts_json_and_stores_it() -> None:
    """Without a schema, input must be JSON-serialisable and is stored and rebuilt as JSON."""
    assert _valid(None, {"a": [1, 2]}) == {"a": [1, 2]}
    assert validation.to_stored(None, {"a": (1, 2)}, WHAT) == {"a": [1, 2]}
    assert validation.rebuild(None, {"a": [1, 2]}) == {"a": [1, 2]}


def test_no_schema_rejects_unserialisable_input() -> None:
    """Without a schema, an unserialisable input is InvalidInputError naming the type."""
    (error,) = _errors(None, {"a": object()})
    assert "object" in error and "input['a']" in error


# -- pydantic-like models ---------------------------------------------------------------------------


class FakeValidationError(ValueError):
    """Mimics pydantic's ValidationError: ``errors()`` lists dicts with ``loc`` and ``msg``."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self._errors = errors

    def errors(self) -> list[dict[str, Any]]:
        return self._errors


class FakeModel:
    """A duck-typed pydantic v2 model: ``model_validate`` and ``model_dump(mode=...)``."""

    def __init__(self, email: str, tier: Tier) -> None:
        self.email = email
        self.tier = tier

    def __eq__(self, other: object) -> bool:
        return isinstance(other, FakeModel) and (self.email, self.tier) == (other.email, other.tier)

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def model_validate(cls, raw: Any) -> FakeModel:
        if isinstance(raw, cls):
            return raw
        errors = []
        if not isinstance(raw.get("email"), str):
            errors.append({"loc": ("email",), "msg": "Input should be a valid string"})
        try:
            tier = Tier(raw.get("tier"))
        except ValueError:
            errors.append({"loc": ("tier",), "msg": "Input should be 'free' or 'pro'"})
        if errors:
            raise FakeValidationError(errors)
        return cls(raw["email"], tier)

    def model_dump(self, mode: str = "python") -> dict[str, Any]:
        return {"email": self.email, "tier": self.tier.value if mode == "json" else self.tier}


def test_pydantic_like_model_validates_stores_and_rebuilds() -> None:
    """A class with model_validate is used duck-typed; model_dump(mode='json') is stored."""
    raw = {"email": "a@b.c", "tier": "pro"}
    assert _valid(FakeModel, raw) == FakeModel("a@b.c", Tier.PRO)
    stored = validation.to_stored(FakeModel, raw, WHAT)
    assert stored == raw
    assert validation.rebuild(FakeModel, stored) == FakeModel("a@b.c", Tier.PRO)


def test_pydantic_like_model_errors_name_fields() -> None:
    """The model's errors() become one 'field: message' string each."""
    assert _errors(FakeModel, {"email": 1, "tier": "gold"}) == [
        "email: Input should be a valid string",
        "tier: Input should be 'free' or 'pro'",
    ]


# -- callables ---------------------------------------------------------------------------------------


def _normalise_email(raw: Any) -> str:
    if not isinstance(raw, str) or "@" not in raw:
        raise ValueError("email must contain '@'")
    return raw.strip().lower()


def test_callable_validator_result_is_stored_and_rebuilt() -> None:
    """A callable's result is the value; it is stored as JSON and rebuilt by calling it again."""
    assert _valid(_normalise_email, " A@B.C ") == "a@b.c"
    stored = validation.to_stored(_normalise_email, " A@B.C ", WHAT)
    assert stored == "a@b.c"
    assert validation.rebuild(_normalise_email, stored) == "a@b.c"


def test_callable_rejection_includes_its_message() -> None:
    """A callable that raises rejects the input; its message is in errors."""
    (error,) = _errors(_normalise_email, "nope")
    assert "email must contain '@'" in error


def test_callable_raising_invalid_input_keeps_its_errors() -> None:
    """A callable raising InvalidInputError contributes its own errors list."""

    def check(raw: Any) -> Any:
        raise InvalidInputError("bad", ["a: too small", "b: too big"])

    assert _errors(check, {}) == ["a: too small", "b: too big"]


def test_callable_returning_unserialisable_value_is_rejected_on_store() -> None:
    """to_stored rejects a validated value that cannot be stored as JSON."""
    with pytest.raises(InvalidInputError, match=WHAT):
        validation.to_stored(lambda raw: object(), {}, WHAT)


# -- schemas -----------------------------------------------------------------------------------------


def test_unusable_schema_is_a_definition_error() -> None:
    """A schema that is not None, a class or a callable is rejected at definition time."""
    with pytest.raises(WorkflowDefinitionError):
        validation.make_validator(42)


def test_schema_kinds() -> None:
    """Each schema is classified as json, class, model or callable."""
    assert validation.schema_kind(None) == "json"
    assert validation.schema_kind(Signup) == "class"
    assert validation.schema_kind(Point) == "class"
    assert validation.schema_kind(FakeModel) == "model"
    assert validation.schema_kind(_normalise_email) == "callable"


def test_rebuild_of_incompatible_stored_json_is_serialization_error() -> None:
    """Stored JSON that no longer fits the class (e.g. after a redeploy) fails clearly."""
    with pytest.raises(SerializationError, match="rebuild"):
        validation.rebuild(Signup, {"plan": "x"})
