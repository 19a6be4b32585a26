"""Turn a HumanEval/MBPP ``check(candidate)`` into graded cases.

- The check source is parsed (never executed here). Its top-level statements other than bare expressions
  and ``if __name__ == ...`` blocks form the *prelude* (imports, helpers, constants such as METADATA):
  MBPP's ``test_check()`` call at the bottom is dropped, the harness calls the cases itself.
- When the body of ``check`` is a sequence of ``assert`` statements (a docstring aside), each assert whose
  test mentions the candidate parameter is one case; asserts that do not mention it (HumanEval's
  ``assert True, "..."``) are not cases, so an empty program cannot earn a non-zero pass rate.
- Otherwise (loops, set-up code, or no assert mentioning the candidate) the whole ``check(candidate)`` is a
  single case.
Each case is sent to the sandbox as the source of ``def __btp_case_<i>(<param>): ...``.
"""

from __future__ import annotations

import ast
import builtins
import textwrap
from dataclasses import dataclass

from services.common.errors import ValidationError


@dataclass(frozen=True)
class CheckPlan:
    """What the harness runs: the prelude, one function per case, and the program names the check uses."""

    prelude: str
    cases: list[str]
    split: bool
    program_names: list[str]


def _bound_names(nodes: list[ast.stmt]) -> set[str]:
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            out.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            out.update((a.asname or a.name).split(".")[0] for a in node.names)
        else:
            out.update(n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store))
    return out


def _is_main_guard(node: ast.stmt) -> bool:
    return isinstance(node, ast.If) and "__name__" in ast.unparse(node.test)


def _mentions(node: ast.AST, name: str) -> bool:
    return any(isinstance(n, ast.Name) and n.id == name for n in ast.walk(node))


def plan_check(code: str) -> CheckPlan:
    """Split a check module into prelude and cases; a malformed check is a 422 on ``tests.code``."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise ValidationError(f"tests.code is not valid Python: {e}", param="tests.code") from None
    checks = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not checks:
        raise ValidationError("tests.code must define `def check(candidate): ...`", param="tests.code")
    check = checks[-1]
    params = check.args.posonlyargs + check.args.args
    if not params:
        raise ValidationError("check() must take the candidate as its first parameter", param="tests.code")
    arg = params[0].arg
    prelude_nodes = [n for n in tree.body if not isinstance(n, ast.Expr) and not _is_main_guard(n)]
    try:
        prelude = ast.unparse(ast.Module(body=prelude_nodes, type_ignores=[]))
    except (RecursionError, ValueError) as e:
        raise ValidationError(f"tests.code cannot be processed: {e}", param="tests.code") from None
    loads = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    # names the check uses but defines nowhere: the program's (HumanEval's poly, the entry point itself)
    program_names = sorted(loads - _bound_names(prelude_nodes) - set(dir(builtins)) - {arg})
    body = list(check.body)
    if body and isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant):
        body = body[1:]
    if body and all(isinstance(s, ast.Assert) for s in body):
        asserts = [s for s in body if isinstance(s, ast.Assert) and _mentions(s.test, arg)]
        if asserts:
            cases = [
                f"def __btp_case_{i}({arg}):\n" + textwrap.indent(ast.unparse(s), "    ") + "\n"
                for i, s in enumerate(asserts)
            ]
            return CheckPlan(prelude=prelude, cases=cases, split=True, program_names=program_names)
    cases = [f"def __btp_case_0({arg}):\n    check({arg})\n"]
    return CheckPlan(prelude=prelude, cases=cases, split=False, program_names=program_names)
