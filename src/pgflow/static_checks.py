"""Mistakes in a workflow function caught at decoration, read from its source (SPEC §14).

Each check looks at one node of the function's :mod:`ast` and returns what is wrong with it, as the
text of a ``WorkflowDefinitionError``, or ``None``; the walker of :mod:`pgflow.static_steps`, which
finds the nodes, adds the function's name and the file line.

- :func:`bare_command`: a step command built as a statement of its own: it is never yielded, so it
  never runs.
- :func:`call_problem`: in a step command or a ``Retry(...)``, a literal step id or event name that
  breaks the id rules, a call passed as the step function (``Run("x", fn(5))`` calls ``fn`` in the
  workflow body on every replay), a literal duration or time that does not parse.

Only literals are checked: a value computed at run time (a variable, an f-string with placeholders,
``60 * 60``) is checked by the command itself when it is built. A call passed as the step function
is refused whatever it returns, since a call that returns a function cannot be told apart from one
that does the work without running it; ``partial(...)`` / ``functools.partial(...)`` are the
exception, as they only bind arguments. Commands are recognised by name, as in the step list.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable

import attrs

from pgflow.arguments import MAX_ID, clip, id_problem, shown
from pgflow.durations import check_duration, check_optional_duration, check_when
from pgflow.errors import PgflowError

__all__ = ["bare_command", "call_problem", "called_name"]

_SHOWN_SOURCE = 100  # at most this many characters of source text per snippet in a message


@attrs.frozen
class _Param:
    """One argument of a command: its keyword, and its index when it may be passed positionally."""

    name: str
    position: int | None = None
    optional: bool = False  # a literal None is allowed (it means "none")


_STEP_ID = _Param("step_id", 0)
_EVENTS = {"WaitFor": _Param("event", 1)}
_FUNCTIONS = {name: _Param("fn", 1) for name in ("Run", "Poll", "Transaction")}
_TAKES_ARGUMENTS = frozenset({"Run", "Transaction"})  # the commands that pass *args to their fn
_TRANSACTION_CALLS = "Transaction calls fn(conn, *args) with the step's connection; "
_TIMEOUT = _Param("timeout", optional=True)
_DURATIONS = {
    "Run": (_TIMEOUT,),
    "WaitFor": (_TIMEOUT,),
    "Delay": (_Param("duration", 1),),
    "Sleep": (_Param("duration", 1),),
    "Poll": (_Param("interval"), _TIMEOUT),
    "Retry": (_Param("initial", 1), _Param("max_delay", 3)),
}
_TIMES = {"WaitUntil": (_Param("when", 1),)}

_Check = Callable[[object, str], object]
"""A check of a value for the named argument that raises a PgflowError (``check_duration``, ...)."""


@attrs.frozen
class _Literal:
    """The value of a literal expression, as Python would evaluate it."""

    value: object


# --------------------------------------------------------------------------------------- checks


def bare_command(call: ast.Call, source: str) -> str:
    """The mistake of a step command ``call`` that is a statement of its own (``source``: the
    text the nodes were parsed from, so messages show the code as written)."""
    text = _shown(call, source)
    return (
        f"`{text}` is built but not yielded, so it never runs; write `yield {text}` "
        f"(or `result = yield {text}`)"
    )


def call_problem(command: str, call: ast.Call, source: str) -> str | None:
    """What is wrong with the literal arguments of ``call``, a call of the step command or
    ``Retry`` named ``command`` (``"Run"``, ``"Retry"``, ...), or None. The step id is checked
    first, then the event, the function, durations, times."""
    if command != "Retry" and (problem := _id_problem(call, _STEP_ID, "step id")) is not None:
        return problem
    checks = (
        _id_problem(call, _EVENTS[command], "event name") if command in _EVENTS else None,
        _function_call_problem(command, call, source),
        *(
            _parse_problem(command, call, param, _duration_check(param))
            for param in _DURATIONS.get(command, ())
        ),
        *(_parse_problem(command, call, param, check_when) for param in _TIMES.get(command, ())),
    )
    return next((problem for problem in checks if problem is not None), None)


def called_name(func: ast.expr) -> str | None:
    """The name a call is made by: ``"Run"`` for ``Run(...)``, ``pgflow.Run(...)``,
    ``pf.commands.Run(...)``; None when the callee is not a name (``make()(...)``)."""
    if isinstance(func, ast.Name):
        return func.id
    if isinstance(func, ast.Attribute):
        return func.attr
    return None


def _id_problem(call: ast.Call, param: _Param, what: str) -> str | None:
    literal = _literal(_argument(call, param))
    if literal is None or (problem := id_problem(literal.value)) is None:
        return None
    return (
        f"{what} must be a string of 1-{MAX_ID} characters without NUL or lone surrogates, "
        f"{problem}: {shown(literal.value)}"
    )


def _function_call_problem(command: str, call: ast.Call, source: str) -> str | None:
    """``Run("x", fn(5))``: ``fn`` would run in the workflow body (on every replay, unrecorded)
    and its result would be passed as the step function."""
    fn = _argument(call, _FUNCTIONS[command]) if command in _FUNCTIONS else None
    if not isinstance(fn, ast.Call) or called_name(fn.func) == "partial":
        return None
    right = _corrected(command, call, fn, source)
    connection = _TRANSACTION_CALLS if command == "Transaction" else ""
    return (
        f"`{_shown(call, source)}` calls `{_shown(fn.func, source)}` in the workflow body, on every "
        f"replay, and passes what it returns as the step function; pass the function and its "
        f"arguments: `{right}` ({connection}if the call returns the step function, assign it to a "
        f"name first)"
    )


def _parse_problem(command: str, call: ast.Call, param: _Param, check: _Check) -> str | None:
    """Why the literal passed for ``param`` does not parse, as ``check`` (the very check the
    command applies when built) says; None when it parses or is not a literal."""
    literal = _literal(_argument(call, param))
    if literal is None:
        return None
    try:
        check(literal.value, f"{command}.{param.name}")
    except PgflowError as exc:
        return clip(str(exc))
    return None


def _duration_check(param: _Param) -> _Check:
    return check_optional_duration if param.optional else check_duration


# --------------------------------------------------------------------------------------- helpers


def _argument(call: ast.Call, param: _Param) -> ast.expr | None:
    """The expression passed for ``param``, or None when it is absent or hidden in ``*args``."""
    if param.position is not None and param.position < len(call.args):
        before = call.args[: param.position + 1]
        return None if any(isinstance(arg, ast.Starred) for arg in before) else call.args[param.position]
    return next((k.value for k in call.keywords if k.arg == param.name), None)


def _literal(node: ast.expr | None) -> _Literal | None:
    """The value of a literal (a constant, a container of constants, ``-5``, an f-string without
    placeholders), or None for anything computed."""
    if node is None:
        return None
    if isinstance(node, ast.JoinedStr):
        parts = [v.value for v in node.values if isinstance(v, ast.Constant)]
        return _Literal("".join(map(str, parts))) if len(parts) == len(node.values) else None
    try:
        return _Literal(ast.literal_eval(node))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return None


def _corrected(command: str, call: ast.Call, inner: ast.Call, source: str) -> str:
    """``call`` passing the function instead of calling it: ``Run("x", fn, 5)`` for
    ``Run("x", fn(5))``; ``functools.partial(fn, ...)`` where arguments cannot follow the function
    (``Poll``, keyword arguments, ``fn=``)."""

    def text(node: ast.AST) -> str:
        return _code(node, source)

    keywords = [text(k) for k in call.keywords]
    if command in _TAKES_ARGUMENTS and not inner.keywords and call.args[1:2] and call.args[1] is inner:
        spliced = [call.args[0], inner.func, *inner.args, *call.args[2:]]
        return _shown_call(text(call.func), [*map(text, spliced), *keywords])
    bound = text(inner.func)
    if inner.args or inner.keywords:
        bound = _shown_call("functools.partial", [bound, *map(text, [*inner.args, *inner.keywords])])
    args = [bound if arg is inner else text(arg) for arg in call.args]
    keywords = [f"{k.arg}={bound}" if k.value is inner else text(k) for k in call.keywords]
    return _shown_call(text(call.func), [*args, *keywords])


def _shown_call(func: str, arguments: list[str]) -> str:
    return clip(f"{func}({', '.join(arguments)})", _SHOWN_SOURCE)


def _shown(node: ast.AST, source: str) -> str:
    return clip(_code(node, source), _SHOWN_SOURCE)


def _code(node: ast.AST, source: str) -> str:
    """``node``'s code as written (quotes and all), on one line."""
    written = ast.get_source_segment(source, node)
    return re.sub(r"\n\s*", " ", written) if written is not None else ast.unparse(node)
