"""The static step list of a workflow, found by reading its source with :mod:`ast` (SPEC §7).

:func:`discover_steps` parses a generator function and lists every step command constructed inside
a ``yield`` (``yield Run("id", ...)``, ``yield All(Run(...), Delay(...))``, ...) in source order.
Nothing is executed: the function's code is only read.

- A step id that is a string literal is taken as is; any other expression (f-string, variable,
  call) is recorded once per call site with ``dynamic=True`` and its source text as the id.
- ``conditional`` marks steps that may not be reached: inside ``if``/``elif``/``else``, ``match``
  cases, ternaries, ``try`` blocks (any clause), ``for``/``while`` ``else`` clauses, and the
  short-circuited operands of ``and``/``or``.
- ``loop`` marks steps that may be reached several times: inside ``for``/``while`` bodies (and a
  ``while`` test) or a comprehension.
- A literal id may appear once per run: twice is a ``WorkflowDefinitionError``, unless the two
  are in mutually exclusive branches (the body and the ``else`` of one ``if``, so every branch of
  an ``if``/``elif``/``else`` chain; two ``case`` blocks of one ``match``; the two arms of a
  ternary) that are not inside a loop. Such an id is listed once, as first found.
- Nested functions, lambdas and classes are separate scopes and are not walked.
- Commands are recognised by name, bare (``Run(...)``) or as an attribute (``pgflow.Run(...)``).
- On the way, every command call is checked for mistakes (:mod:`pgflow.static_checks`): a command
  built as a bare statement, a call passed as the step function, bad literal ids, durations, times.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs
import pendulum

from pgflow.errors import WorkflowDefinitionError
from pgflow.static_checks import bare_command, call_problem, called_name

__all__ = ["GROUP_COMMANDS", "KIND_BY_COMMAND", "StepInfo", "discover_steps"]

#: Command class name -> step kind. ``Sleep`` is an alias of ``Delay``.
KIND_BY_COMMAND: dict[str, str] = {
    "Run": "run",
    "WaitFor": "wait_for",
    "WaitUntil": "wait_until",
    "Delay": "delay",
    "Sleep": "delay",
    "Pause": "pause",
    "Poll": "poll",
    "Transaction": "transaction",
    "Child": "child",
}

#: Commands that only group other commands and have no step id of their own.
GROUP_COMMANDS: frozenset[str] = frozenset({"All"})

#: Calls whose literal arguments are checked at decoration (Retry for its durations).
_CHECKED_CALLS: frozenset[str] = frozenset({*KIND_BY_COMMAND, "Retry"})

_STEP_ID_KEYWORD = "step_id"
_NESTED_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)
_FUNCTION_DEFS = (ast.FunctionDef, ast.AsyncFunctionDef)
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.GeneratorExp, ast.DictComp)


@attrs.frozen
class StepInfo:
    """One step of a workflow's static step list."""

    id: str
    kind: str
    conditional: bool = False
    loop: bool = False
    dynamic: bool = False


def discover_steps(fn: Callable[..., Any]) -> tuple[StepInfo, ...]:
    """List the steps ``fn`` yields, in source order; ``()`` when its source is unavailable.

    Raises :class:`~pgflow.errors.WorkflowDefinitionError` when a literal step id appears twice
    outside mutually exclusive branches, and for the mistakes of :mod:`pgflow.static_checks`.
    """
    found = _parse_function(fn)
    if found is None:
        return ()
    fn_def, first_line, source = found
    walker = _Walker(source, first_line, getattr(fn, "__name__", "?"))
    walker.visit_all(fn_def.body, _Scope())
    return _unique_steps(walker.found)


# --------------------------------------------------------------------------------------- parsing


def _parse_function(fn: Callable[..., Any]) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, int, str] | None:
    """The ``def`` node of ``fn``, the file line of the parsed source's line 1 minus one (add a
    node's ``lineno`` to name its line in the file) and the parsed text, or ``None`` when the
    source is unavailable."""
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return None
    parsed = _parse_source("".join(lines))
    if parsed is None:
        return None
    tree, shift, text = parsed
    name = getattr(fn, "__name__", None)
    for node in ast.walk(tree):
        if isinstance(node, _FUNCTION_DEFS) and node.name == name:
            return node, max(start, 1) - 1 - shift, text
    return None


def _parse_source(source: str) -> tuple[ast.Module, int, str] | None:
    """Parse a (possibly indented) function's source; also returns how many lines were prepended
    and the text parsed.

    When a multi-line string inside the function is indented less than the ``def`` itself,
    :func:`textwrap.dedent` cannot strip the indentation; wrapping the source in an ``if`` block
    then makes it parseable without touching it.
    """
    for text, shift in ((textwrap.dedent(source), 0), ("if True:\n" + source, 1)):
        try:
            return ast.parse(text), shift, text
        except SyntaxError:
            pass
    return None


def _unique_steps(found: Iterable[_Found]) -> tuple[StepInfo, ...]:
    """The step list, a literal id listed once: its repeats must sit in branches exclusive of
    every earlier occurrence (at most one of them can run), else the id is a duplicate."""
    steps: list[StepInfo] = []
    arms_of: dict[str, list[_Arms]] = {}
    for step, arms in found:
        if step.dynamic:
            steps.append(step)
            continue
        earlier = arms_of.setdefault(step.id, [])
        if not all(_exclusive(arms, other) for other in earlier):
            raise WorkflowDefinitionError(
                f"Duplicate step ID detected: '{step.id}'. Step IDs must be unique within a workflow."
            )
        if not earlier:
            steps.append(step)
        earlier.append(arms)
    return tuple(steps)


def _exclusive(arms: _Arms, other: _Arms) -> bool:
    """Whether two places take different arms of the same branch point (so one excludes the other)."""
    taken = dict(other)
    return any(point in taken and taken[point] != arm for point, arm in arms)


# --------------------------------------------------------------------------------------- walking


_Arms = tuple[tuple[int, int], ...]
"""The exclusive branches a place is in: (branch point, arm) pairs, outermost first."""

_Found = tuple[StepInfo, _Arms]


@attrs.frozen
class _Scope:
    """Where the walker stands: flags inherited by every step found below this point."""

    conditional: bool = False
    loop: bool = False
    in_yield: bool = False
    arms: _Arms = ()

    def branch(self) -> _Scope:
        return attrs.evolve(self, conditional=True)

    def arm(self, point: int, arm: int) -> _Scope:
        """Inside one of several branches of which at most one runs (if/else, match, ternary);
        within a loop each pass may take another one, so the arms are not exclusive there."""
        if self.loop:
            return self.branch()
        return attrs.evolve(self, conditional=True, arms=(*self.arms, (point, arm)))

    def repeat(self) -> _Scope:
        return attrs.evolve(self, loop=True)

    def yielded(self, in_yield: bool = True) -> _Scope:
        return attrs.evolve(self, in_yield=in_yield)


class _Walker:
    """Walks one function body in source order, collecting :class:`StepInfo` records."""

    def __init__(self, source: str, line_offset: int = 0, function: str = "?") -> None:
        self.found: list[_Found] = []
        self._source = source
        self._line_offset = line_offset
        self._function = function
        self._branch_points = itertools.count()
        self._handlers: dict[type[ast.AST], Callable[[Any, _Scope], None]] = {
            ast.Expr: self._expression_statement,
            ast.Yield: self._yield,
            ast.YieldFrom: self._yield,
            ast.Call: self._call,
            ast.If: self._if,
            ast.For: self._for,
            ast.AsyncFor: self._for,
            ast.While: self._while,
            ast.Try: self._try,
            ast.TryStar: self._try,
            ast.Match: self._match,
            ast.IfExp: self._if_exp,
            ast.BoolOp: self._bool_op,
            ast.Dict: self._dict,
            ast.ListComp: self._comprehension,
            ast.SetComp: self._comprehension,
            ast.GeneratorExp: self._comprehension,
            ast.DictComp: self._comprehension,
        }

    def mistake(self, node: ast.AST, what: str) -> WorkflowDefinitionError:
        """A mistake found at decoration, naming the function and the file line of ``node``."""
        line = self._line_offset + getattr(node, "lineno", 0)
        return WorkflowDefinitionError(f"workflow function {self._function!r}, line {line}: {what}")

    def visit(self, node: ast.AST | None, scope: _Scope) -> None:
        if node is None or isinstance(node, _NESTED_SCOPES):
            return
        handler = self._handlers.get(type(node))
        if handler is not None:
            handler(node, scope)
        else:
            self.visit_all(ast.iter_child_nodes(node), scope)

    def visit_all(self, nodes: Iterable[ast.AST | None], scope: _Scope) -> None:
        for node in nodes:
            self.visit(node, scope)

    # -- yields and command calls

    def _yield(self, node: ast.Yield | ast.YieldFrom, scope: _Scope) -> None:
        self.visit(node.value, scope.yielded())

    def _call(self, node: ast.Call, scope: _Scope) -> None:
        self._check(node)
        name = _command_name(node.func)
        if not scope.in_yield or name is None:
            self.visit_all(ast.iter_child_nodes(node), scope)
        elif name in GROUP_COMMANDS:
            self.visit_all(_arguments(node), scope)
        else:
            self._record(node, KIND_BY_COMMAND[name], scope)
            self.visit_all(_arguments(node), scope.yielded(False))

    def _check(self, node: ast.Call) -> None:
        checked = called_name(node.func)
        if checked is None or checked not in _CHECKED_CALLS:
            return
        problem = call_problem(checked, node, self._source)
        if problem is not None:
            raise self.mistake(node, problem)

    def _record(self, node: ast.Call, kind: str, scope: _Scope) -> None:
        id_node = _step_id_node(node)
        if id_node is None:
            return
        literal = _literal_string(id_node)
        step = StepInfo(
            id=ast.unparse(id_node) if literal is None else literal,
            kind=kind,
            conditional=scope.conditional,
            loop=scope.loop,
            dynamic=literal is None,
        )
        self.found.append((step, scope.arms))

    # -- statements

    def _expression_statement(self, node: ast.Expr, scope: _Scope) -> None:
        """``Run("x", fn)`` alone on a line builds the command and drops it: it never runs."""
        if isinstance(node.value, ast.Call) and _command_name(node.value.func) is not None:
            raise self.mistake(node, bare_command(node.value, self._source))
        self.visit(node.value, scope)

    def _if(self, node: ast.If, scope: _Scope) -> None:
        self.visit(node.test, scope)
        point = next(self._branch_points)
        self.visit_all(node.body, scope.arm(point, 0))
        self.visit_all(node.orelse, scope.arm(point, 1))  # an elif is an if inside this arm

    def _for(self, node: ast.For | ast.AsyncFor, scope: _Scope) -> None:
        self.visit(node.iter, scope)
        self.visit(node.target, scope.repeat())
        self.visit_all(node.body, scope.repeat())
        self.visit_all(node.orelse, scope.branch())

    def _while(self, node: ast.While, scope: _Scope) -> None:
        self.visit(node.test, scope.repeat())
        self.visit_all(node.body, scope.repeat())
        self.visit_all(node.orelse, scope.branch())

    def _try(self, node: ast.Try | ast.TryStar, scope: _Scope) -> None:
        self.visit_all(ast.iter_child_nodes(node), scope.branch())

    def _match(self, node: ast.Match, scope: _Scope) -> None:
        self.visit(node.subject, scope)
        point = next(self._branch_points)
        for arm, case in enumerate(node.cases):
            # A guard that fails lets the next case run: only the bodies exclude each other.
            self.visit_all([case.pattern, case.guard], scope.branch())
            self.visit_all(case.body, scope.arm(point, arm))

    # -- expressions

    def _if_exp(self, node: ast.IfExp, scope: _Scope) -> None:
        point = next(self._branch_points)
        self.visit(node.body, scope.arm(point, 0))
        self.visit(node.test, scope)
        self.visit(node.orelse, scope.arm(point, 1))

    def _bool_op(self, node: ast.BoolOp, scope: _Scope) -> None:
        first, *rest = node.values
        self.visit(first, scope)
        self.visit_all(rest, scope.branch())

    def _dict(self, node: ast.Dict, scope: _Scope) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            self.visit(key, scope)
            self.visit(value, scope)

    def _comprehension(
        self, node: ast.ListComp | ast.SetComp | ast.GeneratorExp | ast.DictComp, scope: _Scope
    ) -> None:
        first, *rest = node.generators
        self.visit(first.iter, scope)
        inner = scope.repeat()
        self._comprehension_clause(first, inner, skip_iter=True)
        for clause in rest:
            self._comprehension_clause(clause, inner)
        if isinstance(node, ast.DictComp):
            self.visit_all([node.key, node.value], inner)
        else:
            self.visit(node.elt, inner)

    def _comprehension_clause(
        self, clause: ast.comprehension, scope: _Scope, *, skip_iter: bool = False
    ) -> None:
        self.visit(clause.target, scope)
        if not skip_iter:
            self.visit(clause.iter, scope)
        self.visit_all(clause.ifs, scope.branch())


# --------------------------------------------------------------------------------------- helpers


def _command_name(func: ast.expr) -> str | None:
    """``"Run"`` for ``Run`` / ``pgflow.Run`` / ``pf.commands.Run``; ``None`` for non-commands."""
    name = called_name(func)
    return name if name in KIND_BY_COMMAND or name in GROUP_COMMANDS else None


def _arguments(node: ast.Call) -> Iterator[ast.expr]:
    yield from node.args
    for keyword in node.keywords:
        yield keyword.value


def _step_id_node(node: ast.Call) -> ast.expr | None:
    """The step id expression: the first positional argument, else the ``step_id=`` keyword."""
    if node.args:
        return node.args[0]
    return next((k.value for k in node.keywords if k.arg == _STEP_ID_KEYWORD), None)


def _literal_string(node: ast.expr) -> str | None:
    """The value of a string literal (an f-string without placeholders counts), else ``None``."""
    if isinstance(node, ast.Constant):
        return node.value if isinstance(node.value, str) else None
    if isinstance(node, ast.JoinedStr) and all(isinstance(v, ast.Constant) for v in node.values):
        return "".join(str(v.value) for v in node.values if isinstance(v, ast.Constant))
    return None


# ------------------------------------------------------------------ registered workflows (dashboard)
@attrs.frozen
class WorkflowInfo:
    """A workflow as registered in the database (``list_workflows``): its id, its static step list
    and when an engine last registered it."""

    id: str
    steps: tuple[StepInfo, ...]
    registered_at: pendulum.DateTime


__all__ += ["WorkflowInfo"]
