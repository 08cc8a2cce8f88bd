"""The package's layout rules (issue 24), checked on the code itself so they hold for the next feature:
a stage or task is known by name only inside its own folder; stages never import backends; the flow's
wings import each other one way only; the top level holds only the shared base."""

from __future__ import annotations

import ast
from pathlib import Path

import edgekd.stages  # noqa: F401 - registers the built-in stages
from edgekd.config.schema import STAGE_CONFIGS
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


def test_no_backend_is_tested_by_name_outside_the_backends():
    """What a stage, the manifest or a measurement must know of a backend is in its ``Capabilities`` or its
    target model, as data: nothing outside ``backends/`` compares with a backend's name."""
    from edgekd.backends import BACKENDS

    outside = [f"{rel}:{line} tests {name!r}" for rel, tree in sources().items() if not rel.startswith("backends/")
               for line, name in name_tests(tree, set(BACKENDS.names()), {})]
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


def test_the_top_level_holds_only_the_shared_base():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert top == ["__init__.py", "__main__.py", "errors.py", "fileio.py", "progress.py", "registry.py", "version.py"]


def room(module: str) -> str:
    """The wing (top-level folder) or base module a module belongs to: ``edgekd.stages.base`` -> ``stages``."""
    return module.split(".")[1]


def wing_cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One cycle among the wings, or None: depth-first search for a back edge."""
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        state[node] = 2
        path.pop()
        return None

    return next((c for n in sorted(edges) if n not in state and (c := visit(n))), None)


def test_the_wings_import_each_other_one_way():
    """Folder by folder (a wing's files count as one), no import leads back: the flow reads one way."""
    edges: dict[str, set[str]] = {}
    for rel, tree in sources().items():
        if rel in ("__init__.py", "__main__.py"):
            continue  # the package's face and entry point stand above everything
        src = room("edgekd." + Path(rel).with_suffix("").as_posix().replace("/", "."))
        edges.setdefault(src, set()).update(room(m) for m in imported_modules(rel, tree)
                                            if m.count(".") and room(m) != src and (PACKAGE / room(m)).exists()
                                            or m.count(".") and (PACKAGE / f"{room(m)}.py").exists() and room(m) != src)
    assert wing_cycle(edges) is None, " -> ".join(wing_cycle(edges))
    assert wing_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]  # the check itself finds one


def functions(tree: ast.Module) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def is_typer_command(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A CLI command: one parameter per flag is its interface (``@app.command``)."""
    return any("command" in ast.unparse(d) for d in fn.decorator_list)


def test_functions_stay_short_and_take_few_parameters():
    """No function over 80 lines; none over 8 parameters (``self``/``cls`` not counted) except Typer
    commands, whose parameters are their flags: past that, the parameters want a name of their own."""
    long, wide = [], []
    for rel, tree in sources().items():
        for fn in functions(tree):
            lines = fn.end_lineno - fn.lineno + 1
            args = fn.args
            params = [a for a in args.posonlyargs + args.args + args.kwonlyargs if a.arg not in ("self", "cls")]
            if lines > 80:
                long.append(f"{rel}:{fn.lineno} {fn.name} ({lines} lines)")
            if len(params) > 8 and not is_typer_command(fn):
                wide.append(f"{rel}:{fn.lineno} {fn.name} ({len(params)} parameters)")
    assert not long and not wide, long + wide


def test_the_orchestrator_stays_small():
    assert len((PACKAGE / "run" / "pipeline.py").read_text(encoding="utf-8").splitlines()) < 200


def test_a_stage_folder_imports_no_other_stage_folder():
    """What two stages share lives beside them in ``stages/`` (channels, exporting, students, ...), so a
    stage's folder is the whole of that stage."""
    folders = {p.name for p in (PACKAGE / "stages").iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    bad = []
    for rel, tree in sources().items():
        parts = Path(rel).parts
        if len(parts) < 3 or parts[0] != "stages":
            continue
        bad += [f"{rel} imports {m}" for m in imported_modules(rel, tree)
                if m.split(".")[1:2] == ["stages"] and len(m.split(".")) > 2 and m.split(".")[2] in folders
                and m.split(".")[2] != parts[1]]
    assert not bad, bad
