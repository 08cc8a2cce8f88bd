"""The package's layout rules (issue 24), checked on the code itself so they hold for the next feature:
a stage or task is known by name only inside its own folder; stages never import backends; the flow's
wings import each other one way only; the top level holds only the shared base."""

from __future__ import annotations

import ast
from pathlib import Path

import edgekd.stages  # noqa: F401 - registers the built-in stages
from edgekd.config import STAGE_CONFIGS
from edgekd.tasks import TASKS

PACKAGE = Path(edgekd.stages.__file__).parents[1]


def sources() -> dict[str, ast.Module]:
    return {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text(encoding="utf-8"))
            for p in sorted(PACKAGE.rglob("*.py"))}


def owner(rel: str, name: str) -> bool:
    return rel.startswith((f"stages/{name}/", "tasks/"))


def name_tests(tree: ast.Module, names: set[str], classes: dict[str, str]) -> list[tuple[int, str]]:
    """(line, name) of each comparison with a stage/task name and each isinstance/issubclass against
    a stage config or task class."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            for side in (node.left, *node.comparators):
                for v in (side, *getattr(side, "elts", ())):
                    if isinstance(v, ast.Constant) and v.value in names:
                        found.append((node.lineno, v.value))
        elif isinstance(node, ast.Match):
            for case in node.cases:
                for v in ast.walk(case.pattern):
                    if isinstance(v, ast.Constant) and v.value in names:
                        found.append((node.lineno, v.value))
        elif (isinstance(node, ast.Call) and getattr(node.func, "id", "") in ("isinstance", "issubclass")
              and len(node.args) == 2):
            for v in (node.args[1], *getattr(node.args[1], "elts", ())):
                if getattr(v, "id", None) in classes:
                    found.append((node.lineno, classes[v.id]))
    return found


def test_no_stage_or_task_is_tested_by_name_or_type_outside_its_folder():
    names = set(STAGE_CONFIGS.names()) | set(TASKS.names())
    classes = ({STAGE_CONFIGS.get(n).__name__: n for n in STAGE_CONFIGS.names()}
               | {TASKS.get(n).__name__: n for n in TASKS.names()})
    outside = [f"{rel}:{line} tests {name!r}" for rel, tree in sources().items()
               for line, name in name_tests(tree, names, classes) if not owner(rel, name)]
    assert not outside, outside


def test_the_rule_finds_a_planted_name_test():
    """The scan is not vacuous: each form it forbids is found in a planted snippet."""
    planted = ast.parse("if spec.stage == 'quantize': pass\n"
                        "if task in ('embedding', 'x'): pass\n"
                        "ok = isinstance(spec, QuantizeConfig)\n"
                        "match spec.stage:\n    case 'prune': pass\n")
    found = name_tests(planted, {"quantize", "embedding", "prune"}, {"QuantizeConfig": "quantize"})
    assert sorted(found) == [(1, "quantize"), (2, "embedding"), (3, "quantize"), (4, "prune")]


def imported_modules(rel: str, tree: ast.Module) -> set[str]:
    """Every edgekd module ``rel`` imports (relative imports resolved), lazy imports included."""
    here = ["edgekd", *Path(rel).with_suffix("").parts]
    package = here[:-1] if here[-1] != "__init__" else here[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            base = (package[:len(package) - node.level + 1] if node.level else [])
            module = ".".join(base + ([node.module] if node.module else []))
            out.add(module)
            out.update(f"{module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m.startswith("edgekd.")}


def test_stages_never_import_backends():
    bad = [f"{rel} imports {m}" for rel, tree in sources().items() if rel.startswith("stages/")
           for m in imported_modules(rel, tree) if m.startswith(("edgekd.backends", "edgekd.measure"))]
    assert not bad, bad
