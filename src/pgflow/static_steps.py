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
- Nested functions, lambdas and classes are separate scopes and are not walked.
- Commands are recognised by name, bare (``Run(...)``) or as an attribute (``pgflow.Run(...)``).
"""

from __future__ import annotations

import ast
import inspect
import textwrap
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import attrs

from pgflow.arguments import MAX_ID, id_problem, shown
from pgflow.errors import WorkflowDefinitionError

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

    Raises :class:`~pgflow.errors.WorkflowDefinitionError` when a literal step id appears twice.
    """
    found = _parse_function(fn)
    if found is None:
        return ()
    fn_def, first_line = found
    walker = _Walker(first_line, getattr(fn, "__name__", "?"))
    walker.visit_all(fn_def.body, _Scope())
    steps = tuple(walker.steps)
    _check_unique(steps)
    return steps


# --------------------------------------------------------------------------------------- parsing


def _parse_function(fn: Callable[..., Any]) -> tuple[ast.FunctionDef | ast.AsyncFunctionDef, int] | None:
    """The ``def`` node of ``fn`` and the file line of the parsed source's line 1 minus one (add a
    node's ``lineno`` to name its line in the file), or ``None`` when the source is unavailable."""
    try:
        lines, start = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return None
    parsed = _parse_source("".join(lines))
    if parsed is None:
        return None
    tree, shift = parsed
    name = getattr(fn, "__name__", None)
    for node in ast.walk(tree):
        if isinstance(node, _FUNCTION_DEFS) and node.name == name:
            return node, max(start, 1) - 1 - shift
    return None


def _parse_source(source: str) -> tuple[ast.Module, int] | None:
    """Parse a (possibly indented) function's source; also returns how many lines were prepended.

    When a multi-line string inside the function is indented less than the ``def`` itself,
    :func:`textwrap.dedent` cannot strip the indentation; wrapping the source in an ``if`` block
    then makes it parseable without touching it.
    """
    try:
        return ast.parse(textwrap.dedent(source)), 0
    except SyntaxError:
        pass
    try:
        return ast.parse("if True:\n" + source), 1
    except SyntaxError:
        return None


def _check_unique(steps: Iterable[StepInfo]) -> None:
    seen: set[str] = set()
    for step in steps:
        if step.dynamic:
            continue
        if step.id in seen:
            raise WorkflowDefinitionError(
                f"Duplicate step ID detected: '{step.id}'. Step IDs must be unique within a workflow."
            )
        seen.add(step.id)


# --------------------------------------------------------------------------------------- walking


@attrs.frozen
class _Scope:
    """Where the walker stands: flags inherited by every step found below this point."""

    conditional: bool = False
    loop: bool = False
    in_yield: bool = False

    def branch(self) -> _Scope:
        return attrs.evolve(self, conditional=True)

    def repeat(self) -> _Scope:
        return attrs.evolve(self, loop=True)

    def yielded(self, in_yield: bool = True) -> _Scope:
        return attrs.evolve(self, in_yield=in_yield)


class _Walker:
    """Walks one function body in source order, collecting :class:`StepInfo` records."""

    def __init__(self, line_offset: int = 0, function: str = "?") -> None:
        self.steps: list[StepInfo] = []
        self._line_offset = line_offset
        self._function = function
        self._handlers: dict[type[ast.AST], Callable[[Any, _Scope], None]] = {
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
        name = _command_name(node.func)
        if not scope.in_yield or name is None:
            self.visit_all(ast.iter_child_nodes(node), scope)
        elif name in GROUP_COMMANDS:
            self.visit_all(_arguments(node), scope)
        else:
            self._record(node, KIND_BY_COMMAND[name], scope)
            self.visit_all(_arguments(node), scope.yielded(False))

    def _record(self, node: ast.Call, kind: str, scope: _Scope) -> None:
        id_node = _step_id_node(node)
        if id_node is None:
            return
        literal = _literal_string(id_node)
        if literal is not None and (problem := id_problem(literal)) is not None:
            raise self.mistake(node, f"step id must be a string of 1-{MAX_ID} characters without NUL or "
                                     f"lone surrogates, {problem}: {shown(literal)}")  # fmt: skip
        self.steps.append(
            StepInfo(
                id=ast.unparse(id_node) if literal is None else literal,
                kind=kind,
                conditional=scope.conditional,
                loop=scope.loop,
                dynamic=literal is None,
            )
        )

    # -- statements

    def _if(self, node: ast.If, scope: _Scope) -> None:
        self.visit(node.test, scope)
        self.visit_all(node.body, scope.branch())
        self.visit_all(node.orelse, scope.branch())

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
        self.visit_all(node.cases, scope.branch())

    # -- expressions

    def _if_exp(self, node: ast.IfExp, scope: _Scope) -> None:
        self.visit(node.body, scope.branch())
        self.visit(node.test, scope)
        self.visit(node.orelse, scope.branch())

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
    if isinstance(func, ast.Name):
        name = func.id
    elif isinstance(func, ast.Attribute):
        name = func.attr
    else:
        return None
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
