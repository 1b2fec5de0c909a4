"""Pydantic v2 models as step results, outputs, inputs and event data (SPEC §17 "Pydantic values")."""

from __future__ import annotations

import ast
import subprocess
import sys
import tomllib
from collections.abc import Generator
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import attrs
import pendulum
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pgflow
from pgflow import Child, InvalidInputError, Run, SerializationError, WaitFor, serde, workflow
from pgflow.testing import Harness, SimClock

pydantic = pytest.importorskip("pydantic", reason="pydantic is not installed (it is in the dev extra)")

Flow = Generator[Any, Any, Any]
T0 = pendulum.datetime(2030, 1, 1, tz="UTC")
ROOT = Path(__file__).resolve().parents[1]


class Address(pydantic.BaseModel):
    street: str
    city: str = "Paris"


class Profile(pydantic.BaseModel):
    user_name: str = pydantic.Field(alias="userName")
    age: int
    joined: datetime
    balance: Decimal = Decimal("0")
    tags: list[str] = []
    address: Address | None = None


class ProfileV2(pydantic.BaseModel):
    """Profile as a later deploy sees it: a required field the recorded results do not have."""

    user_name: str = pydantic.Field(alias="userName")
    age: int
    email: str


class Point(pydantic.BaseModel):
    x: float
    y: float


@attrs.frozen
class Registration:
    """An attrs input class with a model inside."""

    code: str
    profile: Profile
    extra: list[Address] = attrs.field(factory=list)


ADA = Profile(
    userName="ada",
    age=36,
    joined=datetime(2030, 1, 1, 12, tzinfo=UTC),
    balance=Decimal("12.50"),
    tags=["admin"],
    address=Address(street="1 rue de Rivoli"),
)


def make_profile(name: str, age: int) -> Profile:
    return ADA.model_copy(update={"user_name": name, "age": age})


def make_profiles(n: int) -> list[Profile]:
    return [make_profile(f"u{i}", 20 + i) for i in range(n)]


def profiles_by_name(n: int) -> dict[str, Profile]:
    return {p.user_name: p for p in make_profiles(n)}


def maybe_profile(present: bool) -> Profile | None:
    return ADA if present else None


def make_address(street: str) -> Address:
    return Address(street=street)


def unannotated_profile():  # type: ignore[no-untyped-def]
    return ADA


@pytest.fixture
def clock() -> SimClock:
    return SimClock(T0)


def _started(h: Harness, wf: pgflow.Workflow, data: Any = None) -> str:
    h.register(wf)
    run = h.start_workflow(wf, data)
    h.run_until_idle()
    return run.id


# ============================================================================ step results (Run)


def test_model_result_is_equal_on_first_execution_and_on_replay(clock: SimClock) -> None:
    """A step annotated ``-> Profile`` gives the workflow an equal Profile first and on each replay
    (after a suspension and after a crash)."""
    seen: list[tuple[bool, Any]] = []

    @workflow("model-result")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        profile = yield Run("make", make_profile, "ada", 36)
        seen.append((ctx.is_replaying, profile))
        yield WaitFor("go", event="go")
        yield Run("after", make_address, "x")
        yield Run("last", make_address, "y")
        return profile

    h = Harness(workflows=[wf], clock=clock)
    h.crash_after("after")
    run_id = _started(h, wf)
    h.trigger_event(run_id, "go")
    h.run_until_idle()  # replays after the wait, then crashes after recording "after"
    run = h.run_until_complete(run_id)  # a new worker replays once more
    assert run.status == "completed"
    assert [replaying for replaying, _ in seen] == [False, True, True]
    assert all(type(value) is Profile and value == ADA for _, value in seen)
    assert run.timeline["make"].output == ADA.model_dump(mode="json", by_alias=True)


def test_model_containers_round_trip_through_steps(clock: SimClock) -> None:
    """``list[Model]``, ``dict[str, Model]`` and ``Model | None`` results are rebuilt as annotated."""
    seen: list[Any] = []

    @workflow("model-containers")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        many = yield Run("many", make_profiles, 3)
        by_name = yield Run("by-name", profiles_by_name, 2)
        some = yield Run("some", maybe_profile, True)
        none = yield Run("none", maybe_profile, False)
        seen.append((many, by_name, some, none))
        yield WaitFor("go", event="go")
        return len(many)

    h = Harness(workflows=[wf], clock=clock)
    run_id = _started(h, wf)
    h.trigger_event(run_id, "go")
    h.run_until_idle()
    assert h.get_run(run_id).status == "completed"
    expected = (make_profiles(3), profiles_by_name(2), ADA, None)
    assert seen == [expected, expected]
    many, by_name, some, _ = seen[1]
    assert all(type(p) is Profile for p in many) and type(by_name["u1"]) is Profile
    assert type(some) is Profile and type(some.address) is Address


def test_model_result_without_annotation_is_its_json(h: Harness) -> None:
    """Without a return annotation the workflow receives the model's JSON form (by alias)."""

    @workflow("model-unannotated")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        return (yield Run("make", unannotated_profile))

    run_id = _started(h, wf)
    run = h.get_run(run_id)
    assert run.status == "completed"
    assert run.output == {
        "userName": "ada",
        "age": 36,
        "joined": "2030-01-01T12:00:00Z",
        "balance": "12.50",
        "tags": ["admin"],
        "address": {"street": "1 rue de Rivoli", "city": "Paris"},
    }


def test_output_model_is_stored_as_json_and_rebuilt(h: Harness) -> None:
    """A workflow returning a model stores its JSON; structuring that output as the model gives it back."""

    @workflow("model-output")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        yield Run("noop", lambda: None)
        return [make_profile("bob", 7), None]

    run = h.get_run(_started(h, wf))
    assert run.status == "completed"
    assert run.output[0]["userName"] == "bob" and run.output[1] is None
    assert serde.from_json(run.output, list[Profile | None]) == [make_profile("bob", 7), None]


def test_model_that_no_longer_fits_its_record_fails_naming_the_step(clock: SimClock) -> None:
    """A recorded result that the (changed) annotation's model rejects fails the run with a bounded
    SerializationError naming the step."""
    version = {"make": make_profile}

    def make_profile_v2(name: str, age: int) -> ProfileV2:
        raise AssertionError("a recorded step is not executed again")

    @workflow("model-changed")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        profile = yield Run("make", version["make"], "ada", 36)
        yield WaitFor("go", event="go")
        return profile.age

    h = Harness(workflows=[wf], clock=clock)
    run_id = _started(h, wf)
    version["make"] = make_profile_v2  # a deploy changed the step's result type
    h.trigger_event(run_id, "go")
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "failed" and run.error is not None
    assert run.error.type == "SerializationError" and run.error.step_id == "make"
    assert "step 'make'" in run.error.message and "email: Field required" in run.error.message
    assert "ProfileV2" in run.error.message and len(run.error.message) < 1000


def test_serialisation_errors_of_a_model_are_bounded() -> None:
    """Structuring a value a model rejects names the model and lists a bounded number of errors."""
    fields = {f"f{i}": (int, ...) for i in range(50)}
    wide = pydantic.create_model("Wide", **fields)  # type: ignore[call-overload]
    with pytest.raises(SerializationError) as caught:
        serde.from_json({"f0": "x" * 100_000}, wide)
    message = str(caught.value)
    assert message.startswith("cannot structure JSON as Wide: invalid Wide (f0: Input should be")
    assert "more)" in message and len(message) < 1000


def test_unserialisable_model_fails_the_step(h: Harness) -> None:
    """A model whose ``model_dump`` raises is an unserialisable result: SerializationError."""

    class Opaque(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(arbitrary_types_allowed=True)
        thing: object

    @workflow("model-opaque")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        return (yield Run("make", lambda: Opaque(thing=object())))

    run = h.get_run(_started(h, wf))
    assert run.status == "failed" and run.error is not None
    assert run.error.type == "SerializationError" and run.error.step_id == "make"
    assert "Opaque" in run.error.message


# ============================================================================ inputs


@workflow("model-input", input=Profile)
def model_input_wf(ctx: pgflow.Context[Profile]) -> Flow:
    yield WaitFor("go", event="go")
    return {"type": type(ctx.input).__name__, "name": ctx.input.user_name, "city": ctx.input.address.city}


@workflow("attrs-input-with-model", input=Registration)
def registration_wf(ctx: pgflow.Context[Registration]) -> Flow:
    yield WaitFor("go", event="go")
    return [type(ctx.input.profile).__name__, ctx.input.profile.age, [a.street for a in ctx.input.extra]]


@pytest.mark.parametrize("raw", [ADA, ADA.model_dump(mode="json", by_alias=True)], ids=["model", "dict"])
def test_model_input_is_validated_stored_and_rebuilt(h: Harness, raw: Any) -> None:
    """``input=Model`` accepts a dict or an instance, stores its JSON (by alias) and rebuilds it on replay."""
    run = h.start_workflow(model_input_wf, raw)
    h.run_until_idle()
    assert h.get_run(run.id).input == ADA.model_dump(mode="json", by_alias=True)
    h.trigger_event(run.id, "go")
    h.run_until_idle()
    assert h.get_run(run.id).output == {"type": "Profile", "name": "ada", "city": "Paris"}


def test_model_input_rejection_names_fields(h: Harness) -> None:
    """Input a model rejects raises InvalidInputError with one line per bad field; nothing is stored."""
    with pytest.raises(InvalidInputError) as caught:
        h.start_workflow(model_input_wf, {"userName": 3, "joined": "2030-01-01T00:00:00Z"})
    assert caught.value.errors == ["userName: Input should be a valid string", "age: Field required"]
    assert h.get_runs().items == []


def test_attrs_input_with_a_model_field(h: Harness) -> None:
    """A model nested in an attrs input class is validated by ``model_validate`` and rebuilt."""
    raw = {"code": "c1", "profile": ADA, "extra": [{"street": "a"}, Address(street="b")]}
    run = h.start_workflow(registration_wf, raw)
    stored = h.get_run(run.id).input
    assert stored["profile"] == ADA.model_dump(mode="json", by_alias=True)
    assert stored["extra"] == [{"street": "a", "city": "Paris"}, {"street": "b", "city": "Paris"}]
    h.trigger_event(run.id, "go")
    h.run_until_idle()
    assert h.get_run(run.id).output == ["Profile", 36, ["a", "b"]]
    with pytest.raises(InvalidInputError) as caught:
        h.start_workflow(registration_wf, {"code": "c2", "profile": {"userName": "x"}})
    assert caught.value.errors == ["profile: age: Field required; joined: Field required"]


def test_child_input_model(h: Harness) -> None:
    """A model passed as a child's input is serialised and validated by the child's ``input=Model``."""

    @workflow("model-parent")
    def parent(ctx: pgflow.Context[Any]) -> Flow:
        return (yield Child("child", model_input_wf, make_profile("kid", 5)))

    run_id = _started(h, parent)
    child = h.get_runs(workflow_id="model-input").items[0]
    h.trigger_event(child.id, "go")
    h.run_until_idle()
    assert h.get_run(run_id).output == {"type": "Profile", "name": "kid", "city": "Paris"}


# ============================================================================ event data


def test_wait_for_schema_model_data_is_equal_on_first_execution_and_replay(clock: SimClock) -> None:
    """``WaitFor(schema=Model)`` gives a model (from a dict or a model sent), equal on replay; data the
    model rejects stays in the mailbox."""
    seen: list[Any] = []

    @workflow("model-event")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        point = yield WaitFor("point", event="point", schema=Point)
        seen.append(point)
        points = yield WaitFor("points", event="points", schema=list[Point])
        seen.append(points)
        return point.x + sum(p.y for p in points)

    h = Harness(workflows=[wf], clock=clock)
    run_id = _started(h, wf)
    h.trigger_event(run_id, "point", {"x": "not a number", "y": 1})
    h.run_until_idle()
    assert h.get_run(run_id).waiting.step_id == "point"
    h.trigger_event(run_id, "point", Point(x=1.5, y=2))
    h.run_until_idle()
    h.trigger_event(run_id, "points", [{"x": 0, "y": 1}, Point(x=0, y=2)])
    h.run_until_idle()
    run = h.get_run(run_id)
    assert run.status == "completed" and run.output == 4.5
    assert seen == [Point(x=1.5, y=2), Point(x=1.5, y=2), [Point(x=0, y=1), Point(x=0, y=2)]]
    assert type(seen[1]) is Point and run.timeline["point"].output == {"x": 1.5, "y": 2.0}


# ============================================================================ PostgreSQL


@pytest.mark.postgres
def test_model_result_round_trips_on_postgres(pg_dsn: str, pg_schema: str) -> None:
    """On the Postgres store too, a model result is equal on first execution and on replay."""
    seen: list[Any] = []

    @workflow("model-result-pg", input=Registration)
    def wf(ctx: pgflow.Context[Registration]) -> Flow:
        profile = yield Run("make", make_profile, ctx.input.code, 1)
        seen.append(profile)
        yield WaitFor("go", event="go")
        return profile

    with Harness(workflows=[wf], dsn=pg_dsn, schema=pg_schema, clock=SimClock(T0)) as h:
        run = h.start_workflow(wf, Registration("c", ADA))
        h.run_until_idle()
        h.trigger_event(run.id, "go")
        done = h.run_until_complete(run.id)
    assert done.status == "completed" and serde.from_json(done.output, Profile) == make_profile("c", 1)
    assert seen == [make_profile("c", 1)] * 2


# ============================================================================ properties

names = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
addresses = st.builds(Address, street=names, city=names)
profiles = st.builds(
    Profile,
    userName=names,
    age=st.integers(-(2**63), 2**63 - 1),
    joined=st.datetimes(timezones=st.just(UTC)),
    balance=st.decimals(allow_nan=False, allow_infinity=False, places=4),
    tags=st.lists(names, max_size=3),
    address=st.none() | addresses,
)
points = st.builds(Point, x=st.floats(allow_nan=False, allow_infinity=False), y=st.floats(-1e9, 1e9))


@given(st.one_of(profiles, addresses, points))
def test_models_round_trip(model: Any) -> None:
    """Any model of these shapes survives ``round_trip(m, type(m))`` equal, and its JSON is pure."""
    result = serde.round_trip(model, type(model))
    assert result == model and type(result) is type(model)
    assert serde.loads(serde.dumps(model)) == serde.to_json(model)


@given(st.lists(profiles | st.none(), max_size=3))
def test_models_round_trip_through_a_replayed_step(values: list[Profile | None]) -> None:
    """A step returning ``list[Profile | None]`` gives equal values on first execution and replay."""
    seen: list[Any] = []

    def produce() -> list[Profile | None]:
        return values

    @workflow("model-property")
    def wf(ctx: pgflow.Context[Any]) -> Flow:
        seen.append((yield Run("produce", produce)))
        yield WaitFor("go", event="go")

    with Harness(workflows=[wf], clock=SimClock(T0)) as h:
        run_id = _started(h, wf)
        h.trigger_event(run_id, "go")
        h.run_until_idle()
        assert h.get_run(run_id).status == "completed"
    assert seen == [values, values]


# ============================================================================ no dependency


def test_import_pgflow_does_not_import_pydantic() -> None:
    """``import pgflow`` (and its testing kit) loads no pydantic module, in a fresh interpreter."""
    code = (
        "import sys, pgflow, pgflow.testing, pgflow.serde, pgflow.validation\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('pydantic', 'pydantic_core'))\n"
        "print(loaded)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pydantic_is_no_runtime_dependency() -> None:
    """pydantic is in no runtime requirement, and no module of ``src/pgflow`` imports it."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    runtime = [*project["dependencies"]]
    for extra, requirements in project["optional-dependencies"].items():
        if extra != "dev":
            runtime.extend(requirements)
    assert not [r for r in runtime if "pydantic" in r.lower()]
    assert any(r.startswith("pydantic") for r in project["optional-dependencies"]["dev"])
    for path in (ROOT / "src" / "pgflow").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not [n for n in names if n.split(".")[0] == "pydantic"], path


@pytest.fixture
def h() -> Generator[Harness, None, None]:
    with Harness(workflows=[model_input_wf, registration_wf], clock=SimClock(T0)) as harness:
        yield harness
