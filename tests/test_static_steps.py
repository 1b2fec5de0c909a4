"""Static step discovery (SPEC §7): the step list read from a workflow function's source."""

from __future__ import annotations

import functools
from collections.abc import Callable, Generator
from types import SimpleNamespace
from typing import Any

import pytest

from pgflow.errors import WorkflowDefinitionError
from pgflow.static_steps import KIND_BY_COMMAND, StepInfo, discover_steps

# Dummy commands: discovery reads names only, and none of these workflows is ever run.


def Run(*args: Any, **kwargs: Any) -> Any: ...
def WaitFor(*args: Any, **kwargs: Any) -> Any: ...
def WaitUntil(*args: Any, **kwargs: Any) -> Any: ...
def Delay(*args: Any, **kwargs: Any) -> Any: ...
def Sleep(*args: Any, **kwargs: Any) -> Any: ...
def Pause(*args: Any, **kwargs: Any) -> Any: ...
def Poll(*args: Any, **kwargs: Any) -> Any: ...
def Transaction(*args: Any, **kwargs: Any) -> Any: ...
def Child(*args: Any, **kwargs: Any) -> Any: ...
def All(*args: Any, **kwargs: Any) -> Any: ...
def work(*args: Any) -> Any: ...


pgflow = SimpleNamespace(Run=Run, Delay=Delay, All=All)
pf = pgflow

Flow = Generator[Any, Any, Any]


def ids(fn: Callable[..., Any]) -> list[str]:
    return [step.id for step in discover_steps(fn)]


def by_id(fn: Callable[..., Any]) -> dict[str, StepInfo]:
    return {step.id: step for step in discover_steps(fn)}


# ------------------------------------------------------------------------------------ basics


def simple(ctx: Any) -> Flow:
    user = yield Run("create-account", work, ctx.input.email)
    yield Run("send-welcome", work, user["email"], "Welcome!")
    confirmed = yield WaitFor("await-confirmation", event="user-confirmed", timeout="24h")
    if confirmed is None:
        return {"status": "expired"}
    return {"status": "active"}


def test_simple_list_in_source_order() -> None:
    """Straight-line yields give unflagged steps in source order with their kinds."""
    assert discover_steps(simple) == (
        StepInfo("create-account", "run"),
        StepInfo("send-welcome", "run"),
        StepInfo("await-confirmation", "wait_for"),
    )


def every_kind(ctx: Any) -> Flow:
    yield Run("r", work)
    yield WaitFor("wf", event="e")
    yield WaitUntil("wu", "2030-01-01T00:00:00Z")
    yield Delay("d", "1s")
    yield Sleep("s", "1s")
    yield Pause("p")
    yield Poll("po", work)
    yield Transaction("t", work)
    yield Child("c", "child-flow")


def test_every_command_kind() -> None:
    """Each command maps to its kind; Sleep is a delay."""
    assert [(s.id, s.kind) for s in discover_steps(every_kind)] == [
        ("r", "run"),
        ("wf", "wait_for"),
        ("wu", "wait_until"),
        ("d", "delay"),
        ("s", "delay"),
        ("p", "pause"),
        ("po", "poll"),
        ("t", "transaction"),
        ("c", "child"),
    ]
    assert KIND_BY_COMMAND["Sleep"] == KIND_BY_COMMAND["Delay"] == "delay"
    assert "All" not in KIND_BY_COMMAND


def no_steps(ctx: Any) -> Flow:
    value = ctx.input * 2
    yield from ()
    return value


def test_workflow_without_steps() -> None:
    """A generator that yields no command has an empty step list."""
    assert discover_steps(no_steps) == ()


def outside_yield(ctx: Any) -> Flow:
    command = Run("built-not-yielded", work)
    work(Run("passed-to-a-call", work))
    yield command


def test_commands_outside_a_yield_are_not_counted() -> None:
    """Only commands constructed inside a yield expression count."""
    assert discover_steps(outside_yield) == ()


# ------------------------------------------------------------------------------------ All / nesting


def grouped(ctx: Any) -> Flow:
    results = yield All(Run("a", work), Delay("b", "1s"), WaitFor("c", event="e"))
    yield results


def test_all_children_are_steps() -> None:
    """Each command inside All(...) is a step of its own; All itself is not."""
    assert [(s.id, s.kind) for s in discover_steps(grouped)] == [
        ("a", "run"),
        ("b", "delay"),
        ("c", "wait_for"),
    ]


def containers(ctx: Any) -> Flow:
    yield (Run("in-tuple", work), [Run("in-list", work)], {"k": Run("in-dict", work)})
    yield from All(*[Run("in-starred", work)])
    yield All(Run("outer", work), All(Run("inner", work)))


def test_commands_nested_in_containers_and_yield_from() -> None:
    """Commands in tuples/lists/dicts, starred All args, nested All and yield from count."""
    assert ids(containers) == ["in-tuple", "in-list", "in-dict", "in-starred", "outer", "inner"]


def command_args(ctx: Any) -> Flow:
    x = yield Run("outer", work, (yield Run("inner", work)))
    yield Child("child", "flow", input={"nested": Run("not-a-step", work)})
    return x


def test_command_arguments_are_not_steps_but_nested_yields_are() -> None:
    """A command passed as an argument to another is data; a nested yield still counts."""
    assert ids(command_args) == ["outer", "inner", "child"]


# ------------------------------------------------------------------------------------ flags


def branches(ctx: Any) -> Flow:
    yield Run("always", work)
    if ctx.input:
        yield Run("if-body", work)
    elif ctx.input is None:
        yield Run("elif-body", work)
    else:
        yield Run("else-body", work)
    yield (Run("ternary-a", work) if ctx.input else Run("ternary-b", work))
    yield ctx.input and Run("short-circuit", work)
    try:
        yield Run("try-body", work)
    except ValueError:
        yield Run("except-body", work)
    else:
        yield Run("try-else", work)
    finally:
        yield Run("finally-body", work)
    match ctx.input:
        case {"plan": "pro"}:
            yield Run("match-case", work)
        case _:
            pass
    if (yield Run("if-test", work)):
        pass
    yield Run("after", work)


def test_conditional_flag() -> None:
    """if/elif/else, ternary, and/or, try clauses and match cases mark steps conditional."""
    flags = {s.id: s.conditional for s in discover_steps(branches)}
    assert flags == {
        "always": False,
        "if-body": True,
        "elif-body": True,
        "else-body": True,
        "ternary-a": True,
        "ternary-b": True,
        "short-circuit": True,
        "try-body": True,
        "except-body": True,
        "try-else": True,
        "finally-body": True,
        "match-case": True,
        "if-test": False,
        "after": False,
    }
    assert not any(s.loop for s in discover_steps(branches))


def loops(ctx: Any) -> Flow:
    for i in range(3):
        yield Delay(f"sleep-{i}", "1s")
    else:
        yield Run("for-else", work)
    while (yield Poll("while-test", work)) is None:
        yield Run("while-body", work)
    yield All(*[Run(f"fan-{x}", work) for x in ctx.input])
    yield All(*(Run(f"gen-{x}", work) for x in (yield Run("comp-iter", work))))
    yield Run("after", work)


def test_loop_flag() -> None:
    """for/while bodies, a while test and comprehensions mark steps loop; else clauses don't."""
    steps = by_id(loops)
    assert list(steps) == [
        "f'sleep-{i}'",
        "for-else",
        "while-test",
        "while-body",
        "f'fan-{x}'",
        "comp-iter",
        "f'gen-{x}'",
        "after",
    ]
    looped = {key for key, step in steps.items() if step.loop}
    assert looped == {"f'sleep-{i}'", "while-test", "while-body", "f'fan-{x}'", "f'gen-{x}'"}
    assert steps["for-else"].conditional
    assert not steps["f'sleep-{i}'"].conditional


def nested_flags(ctx: Any) -> Flow:
    for item in ctx.input:
        if item:
            yield Run(f"both-{item}", work)


def test_flags_combine() -> None:
    """A step inside an if inside a for is both conditional and loop."""
    assert discover_steps(nested_flags) == (
        StepInfo("f'both-{item}'", "run", conditional=True, loop=True, dynamic=True),
    )


# ------------------------------------------------------------------------------------ ids


def dynamic_ids(ctx: Any) -> Flow:
    step = "from-variable"
    yield Run(f"user-{ctx.input.id}", work)
    yield Run(step, work)
    yield Run(make_id(ctx), work)
    yield Run(f"no-placeholder", work)  # noqa: F541


def make_id(ctx: Any) -> str:
    return "computed"


def test_dynamic_ids() -> None:
    """Non-literal ids are dynamic with their source text; placeholder-free strings are literal."""
    assert [(s.id, s.dynamic) for s in discover_steps(dynamic_ids)] == [
        ("f'user-{ctx.input.id}'", True),
        ("step", True),
        ("make_id(ctx)", True),
        ("no-placeholder", False),
    ]


def repeated_dynamic(ctx: Any) -> Flow:
    for i in range(2):
        yield Run(f"x-{i}", work)
    for i in range(2):
        yield Run(f"x-{i}", work)


def test_dynamic_ids_count_once_per_call_site_and_never_clash() -> None:
    """Equal dynamic id expressions at two call sites are two steps and not duplicates."""
    assert ids(repeated_dynamic) == ["f'x-{i}'", "f'x-{i}'"]


def keyword_ids(ctx: Any) -> Flow:
    yield Run(step_id="kw-literal", fn=work)
    yield Delay(duration="1s", step_id=f"kw-{ctx.input}")
    yield Pause()


def test_step_id_keyword() -> None:
    """step_id= is the id when there is no positional argument; a command with no id is skipped."""
    assert [(s.id, s.dynamic) for s in discover_steps(keyword_ids)] == [
        ("kw-literal", False),
        ("f'kw-{ctx.input}'", True),
    ]


def qualified(ctx: Any) -> Flow:
    yield pgflow.Run("pgflow-run", work)
    yield pf.Delay("pf-delay", "1s")
    yield pf.All(pgflow.Run("in-all", work))


def test_attribute_qualified_commands() -> None:
    """pgflow.Run(...) and pf.Delay(...) are recognised by their attribute name."""
    assert [(s.id, s.kind) for s in discover_steps(qualified)] == [
        ("pgflow-run", "run"),
        ("pf-delay", "delay"),
        ("in-all", "run"),
    ]


# ------------------------------------------------------------------------------------ scopes


def with_nested_scopes(ctx: Any) -> Flow:
    def helper() -> Flow:
        yield Run("in-nested-def", work)

    class Inner:
        def method(self) -> Flow:
            yield Run("in-class", work)

    _ = lambda: (yield Run("in-lambda", work))  # noqa: E731
    yield Run("outer", work)
    yield from helper()


def test_nested_functions_are_not_walked() -> None:
    """Nested defs, classes and lambdas are separate scopes and contribute no steps."""
    assert ids(with_nested_scopes) == ["outer"]


# ------------------------------------------------------------------------------------ duplicates


def duplicated(ctx: Any) -> Flow:
    yield Run("step-1", work)
    if ctx.input:
        yield Delay("step-1", "1s")


def test_duplicate_literal_id_raises() -> None:
    """A literal id used twice raises WorkflowDefinitionError with the exact message."""
    with pytest.raises(WorkflowDefinitionError) as caught:
        discover_steps(duplicated)
    assert str(caught.value) == (
        "Duplicate step ID detected: 'step-1'. Step IDs must be unique within a workflow."
    )


def duplicated_in_all(ctx: Any) -> Flow:
    yield All(Run("twice", work), Run("twice", work))


def test_duplicate_inside_all_raises() -> None:
    """Duplicates inside one All(...) are detected too."""
    with pytest.raises(WorkflowDefinitionError, match="Duplicate step ID detected: 'twice'"):
        discover_steps(duplicated_in_all)


# ------------------------------------------------------------------------------------ source


def test_source_unavailable_gives_empty_tuple() -> None:
    """Functions without readable source (exec, builtins) have an empty step list."""
    namespace: dict[str, Any] = {"Run": Run}
    exec("def dyn(ctx):\n    yield Run('a', None)\n", namespace)
    assert discover_steps(namespace["dyn"]) == ()
    assert discover_steps(len) == ()


def passthrough(fn: Callable[..., Any]) -> Callable[..., Any]:
    return fn


def wrapping(fn: Callable[..., Any]) -> Callable[..., Any]:
    @functools.wraps(fn)
    def wrapper(*args: Any) -> Any:
        return fn(*args)

    return wrapper


def configured(**options: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return passthrough


@configured(
    retries=3,
    timeout="2 days",
)
@passthrough
def decorated(ctx: Any) -> Flow:
    yield Run("decorated-step", work)


@wrapping
def wrapped(ctx: Any) -> Flow:
    yield Run("wrapped-step", work)


def test_decorated_functions() -> None:
    """Decorators above the def (multi-line, stacked, functools.wraps) don't hide the steps."""
    assert ids(decorated) == ["decorated-step"]
    assert ids(wrapped) == ["wrapped-step"]


def test_indented_function_with_unindented_string() -> None:
    """A def nested in a test, whose body holds a string at column 0, is still parsed."""

    def local(ctx: Any) -> Flow:
        text = """
no indentation here
"""
        yield Run("local-step", work, text)

    assert ids(local) == ["local-step"]


@pytest.mark.parametrize(
    ("source_id", "problem"),
    [
        ('"a\\x00b"', "NUL"),
        ('"a\\ud800"', "lone surrogates"),
        ('""', "empty"),
        ('"' + "x" * 300 + '"', "300 characters"),
    ],
)
def test_a_bad_literal_step_id_is_refused_at_decoration_naming_its_line(
    tmp_path: Any, source_id: str, problem: str
) -> None:
    """A literal step id the database cannot store is a WorkflowDefinitionError at decoration that
    names the function and the line."""
    module = tmp_path / "bad_ids.py"
    module.write_text(
        "from pgflow import Run, workflow\n\n\n"
        "def flow(ctx):\n"
        '    yield Run("fine", print)\n'
        f"    yield Run({source_id}, print)\n"
    )
    namespace: dict[str, Any] = {}
    exec(compile(module.read_text(), str(module), "exec"), namespace)
    import linecache

    linecache.checkcache(str(module))
    from pgflow import workflow

    with pytest.raises(WorkflowDefinitionError) as caught:
        workflow("bad-ids")(namespace["flow"])
    message = str(caught.value)
    assert "'flow', line 6" in message and problem in message and len(message) < 400
