"""Static step discovery (SPEC §7): the step list read from a workflow function's source."""

from __future__ import annotations

import functools
import linecache
import textwrap
from collections.abc import Callable, Generator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

import pgflow as real_pgflow
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


# ------------------------------------------------------------------------------------ mutually exclusive branches


def if_else_twice(ctx: Any) -> Flow:
    yield Run("before", work)
    if ctx.input:
        yield Run("notify", work)
    else:
        yield Delay("notify", "1s")
    yield Run("after", work)


def elif_chain(ctx: Any) -> Flow:
    if ctx.input == 1:
        yield Run("notify", work)
    elif ctx.input == 2:
        yield Delay("notify", "1s")
    elif ctx.input == 3:
        if ctx.input:  # an if inside one branch: its own branches exclude each other and the rest
            yield Run("notify", work)
        else:
            yield Run("notify", work)
    else:
        yield Run("notify", work)


def match_cases(ctx: Any) -> Flow:
    match ctx.input:
        case {"plan": "pro"}:
            yield Run("welcome", work)
        case {"plan": "team"} if ctx.attempt == 0:
            yield Run("welcome", work)
        case _:
            yield Run("welcome", work)


def ternary_arms(ctx: Any) -> Flow:
    yield (Run("pick", work) if ctx.input else Delay("pick", "1s"))


def branches_holding_loops(ctx: Any) -> Flow:
    if ctx.input:
        for _ in ctx.input:
            yield Run(f"item-{_}", work)
        yield Run("done", work)
    else:
        yield Run("done", work)


@pytest.mark.parametrize(
    ("flow", "expected"),
    [
        (if_else_twice, ["before", "notify", "after"]),
        (elif_chain, ["notify"]),
        (match_cases, ["welcome"]),
        (ternary_arms, ["pick"]),
        (branches_holding_loops, ["f'item-{_}'", "done"]),
    ],
)
def test_the_same_literal_id_in_mutually_exclusive_branches_is_one_step(
    flow: Callable[..., Any], expected: list[str]
) -> None:
    """SPEC §7: the same literal id in the body and else of one if (any if/elif/else chain), in
    two cases of one match or in the arms of a ternary is allowed, and listed once, as first found."""
    assert ids(flow) == expected


def test_an_id_shared_by_exclusive_branches_keeps_its_first_kind_and_flags() -> None:
    """The step listed for an id shared by exclusive branches is its first occurrence."""
    assert by_id(if_else_twice)["notify"] == StepInfo("notify", "run", conditional=True)


def twice_in_one_branch(ctx: Any) -> Flow:
    if ctx.input:
        yield Run("dup", work)
        yield Run("dup", work)
    else:
        yield Run("other", work)


def branch_then_after(ctx: Any) -> Flow:
    if ctx.input:
        yield Run("dup", work)
    else:
        yield Run("other", work)
    yield Run("dup", work)


def two_separate_ifs(ctx: Any) -> Flow:
    if ctx.input:
        yield Run("dup", work)
    if not ctx.input:
        yield Run("dup", work)


def exclusive_branches_in_a_loop(ctx: Any) -> Flow:
    for item in ctx.input:
        if item:
            yield Run("dup", work)
        else:
            yield Run("dup", work)


def match_in_a_loop(ctx: Any) -> Flow:
    while ctx.input:
        match ctx.input:
            case 1:
                yield Run("dup", work)
            case _:
                yield Run("dup", work)


def try_and_except(ctx: Any) -> Flow:
    try:
        yield Run("dup", work)
    except ValueError:
        yield Run("dup", work)


def exclusive_pair_then_a_third(ctx: Any) -> Flow:
    if ctx.input:
        yield Run("dup", work)
    else:
        yield Run("dup", work)
    yield ctx.input and Run("dup", work)


@pytest.mark.parametrize(
    "flow",
    [
        twice_in_one_branch,
        branch_then_after,
        two_separate_ifs,
        exclusive_branches_in_a_loop,
        match_in_a_loop,
        try_and_except,
        exclusive_pair_then_a_third,
    ],
)
def test_the_same_literal_id_where_both_can_run_is_still_a_duplicate(flow: Callable[..., Any]) -> None:
    """Twice in one branch, in a branch and after the if, in two separate ifs, in exclusive
    branches inside a loop (each pass may take the other), in try and except: a duplicate."""
    with pytest.raises(WorkflowDefinitionError) as caught:
        discover_steps(flow)
    assert str(caught.value) == (
        "Duplicate step ID detected: 'dup'. Step IDs must be unique within a workflow."
    )


# ------------------------------------------------------------------------------------ mistakes caught at decoration

MODULE_HEADER = """\
import functools
from functools import partial

import pgflow
from pgflow import All, Child, Delay, Pause, Poll, Retry, Run, Sleep, Transaction, WaitFor, WaitUntil


def work(*args, **kwargs):
    return args


"""


def flow_in_a_module(tmp_path: Path, body: str) -> tuple[Callable[..., Any], int]:
    """``def flow(ctx):`` with ``body`` in a module file, so its source has known file lines; also
    the line of ``body`` marked ``# here`` (0 when none is)."""
    source = MODULE_HEADER + "def flow(ctx):\n" + textwrap.indent(textwrap.dedent(body), "    ")
    path = tmp_path / "flows.py"
    path.write_text(source)
    linecache.checkcache(str(path))
    namespace: dict[str, Any] = {}
    exec(compile(source, str(path), "exec"), namespace)
    lines = source.splitlines()
    marked = next((n for n, line in enumerate(lines, 1) if line.endswith("# here")), 0)
    return namespace["flow"], marked


def refusal(tmp_path: Path, body: str) -> tuple[str, int]:
    """The message of the WorkflowDefinitionError that ``@workflow`` raises for a ``flow`` with
    ``body``, and the line marked ``# here``."""
    flow, marked = flow_in_a_module(tmp_path, body)
    with pytest.raises(WorkflowDefinitionError) as caught:
        real_pgflow.workflow("flow")(flow)
    return str(caught.value), marked


def accepted(tmp_path: Path, body: str) -> list[str]:
    """The step ids of a ``flow`` with ``body``, which ``@workflow`` must accept."""
    flow, _ = flow_in_a_module(tmp_path, body)
    return [step.id for step in real_pgflow.workflow("flow")(flow).steps]


@pytest.mark.parametrize(
    ("source_id", "problem"),
    [
        ('"a\\x00b"', "NUL"),
        ('"a\\ud800"', "lone surrogates"),
        ('""', "empty"),
        ('"' + "x" * 300 + '"', "300 characters"),
        ("5", "got int: 5"),
        ("None", "got NoneType"),
    ],
)
def test_a_bad_literal_step_id_is_refused_at_decoration_naming_its_line(
    tmp_path: Path, source_id: str, problem: str
) -> None:
    """A literal step id that breaks the id rules is a WorkflowDefinitionError at decoration that
    names the function and the file line."""
    message, line = refusal(
        tmp_path,
        f"""
        yield Run("fine", print)
        yield Run({source_id}, print)  # here
        """,
    )
    assert f"'flow', line {line}: step id must be" in message and problem in message
    assert len(message) < 400


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ('yield WaitFor("w", "")', "event name must be a string of 1-256 characters"),
        ('yield WaitFor("w", event="a\\x00b")', "got a NUL character"),
        (
            "yield WaitFor('w', 42)",
            "event name must be a string of 1-256 characters without NUL or lone surrogates, got int: 42",
        ),
        ('command = Run("", work)', "step id must be"),
    ],
)
def test_a_bad_literal_event_name_or_an_id_outside_a_yield_is_refused(
    tmp_path: Path, statement: str, problem: str
) -> None:
    """A literal WaitFor event name that breaks the id rules is refused at decoration, and so is a
    bad literal step id in a command built outside a yield."""
    message, line = refusal(tmp_path, f"{statement}  # here\nyield Run('fine', work)\n")
    assert f"'flow', line {line}: " in message and problem in message


@pytest.mark.parametrize(
    "statement",
    [
        'Run("send", work, ctx.input)',
        'pgflow.Delay("nap", "1s")',
        'All(Run("a", work), WaitFor("b", "e"))',
        'WaitFor("confirm", event="confirmed")',
        'Pause("gate")',
        'Child("child", "other-flow")',
    ],
)
def test_a_step_command_that_is_not_yielded_is_refused(tmp_path: Path, statement: str) -> None:
    """A step command alone on a line never runs: refused at decoration, naming the line and
    showing the yield it lacks."""
    message, line = refusal(tmp_path, f'yield Run("first", work)\n{statement}  # here\n')
    assert f"'flow', line {line}: `{statement}` is built but not yielded, so it never runs" in message
    assert f"write `yield {statement}` (or `result = yield {statement}`)" in message


def test_a_command_not_yielded_is_found_in_nested_blocks(tmp_path: Path) -> None:
    """A bare command inside an if, a loop or a try is found too."""
    message, line = refusal(
        tmp_path,
        """
        for item in ctx.input:
            try:
                if item:
                    Run(f"ship-{item}", work)  # here
            finally:
                yield Run(f"log-{item}", work)
        """,
    )
    assert f'line {line}: `Run(f"ship-{{item}}", work)` is built but not yielded' in message


def test_commands_built_first_and_yielded_later_are_fine(tmp_path: Path) -> None:
    """Assigning a command (or passing it to a call, or into a list) is not a bare statement."""
    assert accepted(
        tmp_path,
        """
        command = Run("built-first", work)
        later = [Delay("in-a-list", "1s")]
        work(Run("passed-along", work))
        work(1)
        yield command
        yield All(*later)
        yield Run("literal", work)
        """,
    ) == ["literal"]


@pytest.mark.parametrize(
    ("wrong", "callee", "right"),
    [
        ('Run("x", work(5))', "work", 'Run("x", work, 5)'),
        ('Run("x", work(5, *ctx.input), 6, timeout="1m")', "work", 'Run("x", work, 5, *ctx.input, 6, timeout="1m")'),
        ('pgflow.Run("x", ctx.input.method(5))', "ctx.input.method", 'pgflow.Run("x", ctx.input.method, 5)'),
        ('Run("x", work(5, to="a"))', "work", 'Run("x", functools.partial(work, 5, to="a"))'),
        ('Run(step_id="x", fn=work(5))', "work", 'Run(step_id="x", fn=functools.partial(work, 5))'),
        ('Run("x", fn=work())', "work", 'Run("x", fn=work)'),
        ('Poll("p", work())', "work", 'Poll("p", work)'),
        ('Poll("p", work(1), interval="5s")', "work", 'Poll("p", functools.partial(work, 1), interval="5s")'),
        ('Transaction("t", work("acct", 5))', "work", 'Transaction("t", work, "acct", 5)'),
    ],
)  # fmt: skip
def test_a_call_passed_as_the_step_function_is_refused_showing_the_right_form(
    tmp_path: Path, wrong: str, callee: str, right: str
) -> None:
    """Run/Poll/Transaction given fn(...) instead of fn: refused at decoration, the message names
    the line, says the call runs in the workflow body on every replay and shows the right form
    (partial where arguments cannot follow the function)."""
    message, line = refusal(tmp_path, f"yield {wrong}  # here\n")
    assert f"'flow', line {line}: `{wrong}` calls `{callee}` in the workflow body, on every replay" in message
    assert f"pass the function and its arguments: `{right}`" in message


def test_a_transaction_call_mistake_says_what_the_function_receives(tmp_path: Path) -> None:
    """For Transaction the message adds that fn receives the step's connection first."""
    message, _ = refusal(tmp_path, 'yield Transaction("t", work(ctx.input))\n')
    assert "Transaction calls fn(conn, *args) with the step's connection" in message


def test_a_call_as_the_step_function_is_refused_outside_a_yield_too(tmp_path: Path) -> None:
    """The call runs wherever the command is built, so a command assigned first is checked too."""
    message, line = refusal(tmp_path, 'command = Run("x", work(5))  # here\nyield command\n')
    assert f'line {line}: `Run("x", work(5))` calls `work`' in message


def test_long_code_in_a_message_is_bounded(tmp_path: Path) -> None:
    """Code shown in a message is cut short: a huge call still gives a short message."""
    huge = '"' + "x" * 5_000 + '"'
    message, _ = refusal(tmp_path, f'yield Run("x", work({huge}, {huge}))\n')
    assert "calls `work`" in message and len(message) < 700


def test_partial_lambda_names_and_methods_are_fine_as_step_functions(tmp_path: Path) -> None:
    """partial(...), functools.partial(...), a lambda, a name, a method and an argument hidden in
    *args are not calls of the step function and are accepted."""
    assert accepted(
        tmp_path,
        """
        yield Run("partial", partial(work, 5))
        yield Run("functools-partial", functools.partial(work, 5, to="a"))
        yield Poll("poll-partial", functools.partial(work, 1))
        yield Run("lambda", lambda: work(5))
        yield Run("name", work)
        yield Run("method", ctx.input.method, 5)
        yield Transaction("transaction", work, "acct")
        yield Run("starred", *ctx.input)
        step = work(5)
        yield Run("assigned-first", step)
        """,
    ) == [
        "partial", "functools-partial", "poll-partial", "lambda", "name", "method", "transaction",
        "starred", "assigned-first",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("statement", "problem"),
    [
        ('Delay("d", "2 dyas")', "Invalid duration for Delay.duration: '2 dyas' (unknown unit 'dyas')"),
        ('Sleep("d", 0)', "Invalid duration for Sleep.duration: must be a positive value"),
        ('Delay("d", f"3 lightyears")', "unknown unit 'lightyears'"),
        ('Delay(step_id="d", duration="100000000 weeks")', "past year 9999"),
        ('WaitFor("w", "e", timeout="soon")', "Invalid duration for WaitFor.timeout: 'soon'"),
        ('Poll("p", work, interval={"hour": 1})', "Poll.interval: {'hour': 1} (unknown key 'hour'"),
        ('Poll("p", work, timeout=-5)', "Invalid duration for Poll.timeout: must be a positive value"),
        ('Run("r", work, timeout="1 fortnight")', "Run.timeout: '1 fortnight' (unknown unit"),
        ('Run("r", work, retry=Retry(initial="fast"))', "Invalid duration for Retry.initial: 'fast'"),
        ('Run("r", work, retry=Retry(3, "1s", 2.0, "ever"))', "Invalid duration for Retry.max_delay"),
        ('WaitUntil("u", "next monday")', "WaitUntil.when: Invalid time: 'next monday'"),
        ('WaitUntil(step_id="u", when=1700000000)', "WaitUntil.when: Invalid time: 1700000000"),
    ],
)
def test_a_literal_duration_or_time_that_does_not_parse_is_refused(
    tmp_path: Path, statement: str, problem: str
) -> None:
    """A literal duration (Delay/Sleep, timeout=, interval=, an inline Retry) or WaitUntil time
    that does not parse is refused at decoration, naming the line, the argument and the error."""
    message, line = refusal(tmp_path, f"yield {statement}  # here\n")
    assert f"'flow', line {line}: " in message and problem in message


def test_a_huge_literal_duration_gives_a_bounded_message(tmp_path: Path) -> None:
    """The value shown for a bad literal duration is cut short."""
    message, _ = refusal(tmp_path, f'yield Delay("d", "{"9x" * 5_000}")\n')
    assert "Invalid duration for Delay.duration" in message and len(message) < 400


def test_literal_durations_that_parse_and_values_computed_at_run_time_are_fine(tmp_path: Path) -> None:
    """Good literals, None for an optional duration, and values computed at run time (names,
    expressions, f-strings with placeholders) are not refused: the command checks those when built."""
    assert accepted(
        tmp_path,
        """
        yield Delay("seconds", 60)
        yield Delay("dict", {"hours": 2})
        yield Sleep("string", "1h30m")
        yield WaitFor("none", "e", timeout=None)
        yield Poll("poll", work, interval="5s", timeout={"days": 1})
        yield Run("retry", work, retry=Retry(initial="1s", max_delay="1h"), timeout=30.5)
        yield WaitUntil("when", "2030-01-01")
        yield Delay("variable", ctx.input)
        yield Delay("f-string", f"{ctx.input}s")
        yield Delay("expression", 60 * 60)
        yield WaitUntil("computed", ctx.input["when"])
        yield Run("retry-computed", work, retry=Retry(initial=ctx.input))
        """,
    ) == [
        "seconds", "dict", "string", "none", "poll", "retry", "when", "variable", "f-string",
        "expression", "computed", "retry-computed",
    ]  # fmt: skip


def test_nested_functions_and_lambdas_are_not_checked(tmp_path: Path) -> None:
    """Nested defs and lambdas are separate scopes (not read), as for the step list."""
    assert accepted(
        tmp_path,
        """
        def helper():
            Run("bare-in-helper", work)
        later = lambda: Run("x", work(5))  # noqa: E731
        yield Run("outer", work)
        """,
    ) == ["outer"]


def test_mistakes_in_a_function_without_source_are_not_checked() -> None:
    """A function whose source is unavailable (exec without a file) is accepted unchecked."""
    namespace: dict[str, Any] = {"Run": real_pgflow.Run, "work": work}
    exec("def dyn(ctx):\n    Run('bare', work)\n    yield Run('x', work(5))\n", namespace)
    assert real_pgflow.workflow("dyn")(namespace["dyn"]).steps == ()
