"""Issue 22.4: bad input by classes, tested by generators (Hypothesis), not by a list of known cases.

Each property feeds one input kind (recipes, targets, budgets, baselines, report.json, npz files, text
rows, image folders, names, environment variables, YAML) with generated content and asserts the
exit-code contract: the result is either a valid value or one of edgekd's own errors (exit 2), never
another exception (exit 3), never a traceback, never a hang past the example deadline, and inputs and
finished runs unchanged. Examples are derandomized (the same every run, so CI is reproducible) and
sized to keep the whole file near a minute on 2 cores.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import shutil
import string
import zipfile
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekd.errors import EdgekdError, InputError

from .conftest import invoke, reseal

PROFILE = settings(max_examples=40, deadline=10_000, derandomize=True, print_blob=True,
                   suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                          HealthCheck.data_too_large])
FEW = settings(PROFILE, max_examples=12)

# ---------------------------------------------------------------- value generators
scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**13, 10**13),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["auto", "cpu", "fp32", "int8", "qat", "ptq", "onnxruntime", "p50", "-1", "1e400",
                                     "nan", "../../x", "a\nb", "ort[/]", "::warning::x"]))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=12), inner, max_size=4)),
                      max_leaves=12)


def keyed(fields: list[str]) -> st.SearchStrategy[dict]:
    """Mappings whose keys are mostly the model's real field names (so validation goes deep), some not."""
    return st.dictionaries(st.one_of(st.sampled_from(fields), st.text(max_size=10)), values, max_size=6)


def snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".edgekd.lock"}


def record(folder: Path) -> dict[str, str]:
    """``snapshot`` of the run's record: every file but the report views ``gate`` and ``report`` re-render
    (``gate`` writes its verdict into the report), and the manifest without those views' hashes."""
    from edgekd.artifacts.rundir import REPORT_FILES

    snap = {k: v for k, v in snapshot(folder).items() if k not in REPORT_FILES and k != "manifest.json"}
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["outputs"] = {k: v for k, v in manifest.get("outputs", {}).items() if k not in REPORT_FILES}
    snap["manifest.json"] = hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()
    return snap


def no_junit_in_the_report(folder: Path) -> bool:
    from edgekd.artifacts.rundir import REPORT_FILES

    return not any((folder / n).is_file() and (folder / n).read_bytes().startswith(b"<?xml") for n in REPORT_FILES)


HANG_SECONDS = 30  # a reader still busy after this long is a hang (a symlink loop walked forever)


class Hang(Exception):
    pass


def only_our_errors(call, *args):
    """``call(*args)``'s value, or None if it raised one of edgekd's errors; anything else fails the test,
    and so does a call still running after ``HANG_SECONDS`` (an alarm interrupts it: Hypothesis' deadline
    only judges examples that finish)."""
    import signal

    def alarm(signum, frame):
        raise Hang(f"{getattr(call, '__name__', call)} ran past {HANG_SECONDS} s")

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, HANG_SECONDS)
    try:
        return call(*args)
    except EdgekdError:
        return None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def exit_contract(result) -> None:
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output and "internal error" not in result.output, result.output


# ---------------------------------------------------------------- configuration files
def _fields(model) -> list[str]:
    return list(model.model_fields)


@PROFILE
@given(doc=st.one_of(values, keyed(["name", "stages", "data", "student", "targets", "seed", "arch", "device"])),
       kind=st.sampled_from(["recipe", "target", "budget"]))
def test_any_yaml_document_is_a_config_or_a_one_line_input_error(tmp_path, doc, kind):
    from edgekd.config.schema import Budget, Recipe, Target, load_budget
    from edgekd.backends import load_target
    from edgekd.run.recipe import load_recipe

    if isinstance(doc, dict):
        doc = {**doc, **({"stages": [{"stage": "export"}]} if kind == "recipe" and "stages" not in doc else {})}
    path = tmp_path / f"{kind}.yaml"
    try:
        path.write_text(yaml.safe_dump(doc, allow_unicode=True), encoding="utf-8")
    except (yaml.YAMLError, UnicodeEncodeError):
        return
    loader = {"recipe": load_recipe, "target": load_target, "budget": load_budget}[kind]
    try:
        loaded = loader(path)
    except InputError as exc:
        assert "\n" not in str(exc).strip() or kind == "recipe", str(exc)  # one line (recipes list each key)
        return
    assert isinstance(loaded, {"recipe": Recipe, "target": Target, "budget": Budget}[kind])


@PROFILE
@given(text=st.text(alphabet=st.characters(blacklist_categories=["Cs"]), max_size=300))
def test_any_text_as_yaml_is_read_or_refused(tmp_path, text):
    from edgekd.config.schema import read_yaml
    from edgekd.errors import RecipeError

    path = tmp_path / "x.yaml"
    path.write_text(text, encoding="utf-8")
    value = only_our_errors(read_yaml, path, RecipeError)
    assert value is None or isinstance(value, dict)


@FEW
@given(depth=st.integers(1, 40), width=st.integers(1, 3))
def test_yaml_aliases_never_expand_past_the_node_limit(tmp_path, depth, width):
    """Generated alias ladders (each level repeats the previous ``width`` times): read within the
    deadline, either small enough or refused."""
    from edgekd.config.schema import read_yaml
    from edgekd.errors import RecipeError
    from edgekd.fileio import LIMITS

    lines = ["a0: &a0 [x]"] + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, depth)]
    path = tmp_path / "ladder.yaml"
    path.write_text("\n".join(lines) + "\n")
    value = only_our_errors(read_yaml, path, RecipeError)
    if value is not None:
        assert width ** depth <= LIMITS.yaml_nodes * 4  # what loaded was genuinely small


# ---------------------------------------------------------------- names
@PROFILE
@given(name=st.text(max_size=140))
def test_a_name_is_a_safe_file_name_or_refused(tmp_path, name):
    from edgekd.fileio import checked_file_name

    try:
        checked_file_name(name, "target name")
    except InputError as exc:
        assert "\n" not in str(exc)
        return
    path = (tmp_path / "run" / "measurements" / f"v@{name}.json").resolve()
    assert path.parent == (tmp_path / "run" / "measurements").resolve()
    assert not any(ord(c) < 32 or ord(c) == 127 for c in name)


@PROFILE
@given(text=st.text(max_size=200))
def test_whatever_is_printed_is_one_plain_line(text):
    from rich.console import Console

    from edgekd.progress import for_plain_log, for_terminal, plain_console

    line = for_plain_log(text)
    assert "\n" not in line and "\r" not in line and not line.startswith("::")
    buffer = io.StringIO()
    console = plain_console(file=buffer, width=400, soft_wrap=True)
    console.print(f"FAIL {text}: message")
    printed = buffer.getvalue()
    assert printed.count("\n") == 1 and not any(p.startswith("::") for p in printed.splitlines())
    Console(file=io.StringIO()).print(for_terminal(text))  # rich markup in a name never raises


# ---------------------------------------------------------------- environment variables
@PROFILE
@given(raw=st.one_of(st.text(max_size=20), st.floats().map(repr), st.integers().map(str)))
def test_the_teacher_cache_variable_is_a_finite_size_or_refused(monkeypatch, raw):
    from edgekd.config.environment import TEACHER_CACHE_MB

    if "\0" in raw:
        return
    monkeypatch.setenv(TEACHER_CACHE_MB.name, raw)
    value = only_our_errors(TEACHER_CACHE_MB.read)
    assert value is None or (math.isfinite(value) and TEACHER_CACHE_MB.low <= value <= TEACHER_CACHE_MB.high)


# ---------------------------------------------------------------- data files
def _npz_bytes(arrays: dict[str, np.ndarray], compressed: bool) -> bytes:
    buffer = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buffer, **arrays)
    return buffer.getvalue()


array_strategy = st.builds(
    lambda shape, dtype, fill: np.full(shape, fill).astype(dtype),
    st.lists(st.integers(0, 5), min_size=0, max_size=4).map(tuple),
    st.sampled_from(["float32", "float64", "uint8", "int64", "int8", "bool", "complex64"]),
    st.sampled_from([0, 1, 3, -1]))


@PROFILE
@given(arrays=st.dictionaries(st.sampled_from(["x_train", "y_train", "x_test", "y_test", "x_val", "y_val", "other"]),
                              array_strategy, min_size=1, max_size=5),
       compressed=st.booleans(), cut=st.one_of(st.none(), st.integers(0, 400)), flip=st.one_of(st.none(),
                                                                                               st.integers(0, 400)))
def test_any_npz_is_data_or_a_data_error(tmp_path, arrays, compressed, cut, flip):
    from edgekd.config.schema import DataSpec
    from edgekd.data.build import build_splits

    data = bytearray(_npz_bytes(arrays, compressed))
    if flip is not None and flip < len(data):
        data[flip] ^= 0xFF
    if cut is not None:
        data = data[: len(data) - cut]
    path = tmp_path / "d.npz"
    path.write_bytes(bytes(data))
    before = path.read_bytes()
    only_our_errors(lambda: build_splits(DataSpec(source="npz", path=str(path), batch_size=4)))
    assert path.read_bytes() == before


text_cell = st.one_of(st.text(max_size=40), st.sampled_from(["\ufeffhello", "a,b", '"quoted', "x" * 200_001]))
label_cell = st.one_of(st.integers(-3, 10**13), st.floats(allow_nan=True), st.booleans(), st.none(),
                       st.sampled_from(["pos", "neg", "1", "1.7", "nan", ""]), st.lists(st.integers(), max_size=2))


@PROFILE
@given(rows=st.lists(st.dictionaries(st.sampled_from(["text", "label", "other"]), st.one_of(text_cell, label_cell),
                                     max_size=3), max_size=8),
       fmt=st.sampled_from(["jsonl", "csv", "raw"]), raw=st.binary(max_size=200))
def test_any_text_file_gives_rows_and_labels_or_a_data_error(tmp_path, rows, fmt, raw):
    from edgekd.data.text import label_ids, read_rows

    path = tmp_path / f"t.{'jsonl' if fmt != 'csv' else 'csv'}"
    if fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif fmt == "csv":
        header = sorted({k for r in rows for k in r}) or ["text"]
        lines = [",".join(header)] + [",".join(str(r.get(k, "")).replace("\n", " ") for k in header[: 1 + i % 3])
                                      for i, r in enumerate(rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    else:
        path.write_bytes(raw)
    parts = only_our_errors(read_rows, path, "text", "label")
    if parts is None:
        return
    for texts, labels in parts.values():
        assert all(isinstance(t, str) for t in texts)
        if labels is not None:
            ids = only_our_errors(label_ids, labels, None)
            assert ids is None or (ids[0].dtype == np.int64 and (ids[0] >= 0).all())


def _png(size: int = 4) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (10, 20, 30)).save(buffer, format="PNG")
    return buffer.getvalue()


image_file = st.one_of(st.just(_png()), st.binary(max_size=64), st.just(b""), st.just(_png()[:30]),
                       st.just(b"\x89PNG\r\n\x1a\n" + b"\0" * 40))


@PROFILE
@given(classes=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(image_file, min_size=1, max_size=3),
                               min_size=1, max_size=3),
       links=st.lists(st.sampled_from(["loop", "self", "file"]), max_size=2))
def test_any_image_folder_decodes_or_names_the_bad_file(tmp_path, classes, links):
    """Every sample decoded (as --dry-run does), symlink loops included, within the deadline."""
    from edgekd.config.schema import DataSpec
    from edgekd.data.build import build_splits

    root = tmp_path / "images"
    if root.exists():
        shutil.rmtree(root)
    for name, files in classes.items():
        (root / name).mkdir(parents=True)
        for i, data in enumerate(files):
            (root / name / f"{i}.png").write_bytes(data)
    first = root / sorted(classes)[0]
    for kind in links:
        link = first / f"link-{kind}"
        if not link.exists() and not link.is_symlink():
            link.symlink_to({"loop": root, "self": first, "file": next(first.glob("*.png"))}[kind])
    spec = DataSpec(source="imagefolder", path=str(root), batch_size=2, split=(0.5, 0.25, 0.25),
                    preprocess={"size": 8})
    splits = only_our_errors(build_splits, spec)
    if splits is not None:
        only_our_errors(splits.check_every_sample)
        total = sum(len(files) for files in classes.values()) + ("file" in links)
        assert sum(splits.size(s) for s in ("train", "val", "test")) <= total  # a linked folder adds nothing


# ---------------------------------------------------------------- documents a run is judged by
@pytest.fixture(scope="module")
def judged_run(tiny_run, tmp_path_factory) -> Path:
    copy = tmp_path_factory.mktemp("judged") / "run"
    shutil.copytree(tiny_run, copy)
    return copy


@PROFILE
@given(budget=st.one_of(values, keyed(["variant", "max_size_mb", "max_accuracy_drop", "min_accuracy", "max_latency_ms",
                                       "max_latency_ratio", "max_size_ratio", "variants", "machine_id"])))
def test_gate_on_any_budget_keeps_the_exit_contract_and_the_run(judged_run, tmp_path, budget):
    before = record(judged_run)
    path = tmp_path / "budget.yaml"
    path.write_text(yaml.safe_dump(budget, allow_unicode=True), encoding="utf-8")
    exit_contract(invoke("gate", judged_run, "--budget", path, "--junit", tmp_path / "j.xml"))
    assert record(judged_run) == before  # gate re-renders the report with its verdict, and changes nothing else


def _mutated(document: dict, path: list, value) -> dict:
    """``document`` with the value at ``path`` (list indices and keys, wrapped around) replaced."""
    doc = json.loads(json.dumps(document))
    node = doc
    for step in path[:-1]:
        if isinstance(step, str):
            node = node[step]
        elif isinstance(node, list) and node:
            node = node[step % len(node)]
        elif isinstance(node, dict) and node:
            node = node[sorted(node)[step % len(node)]]
    if isinstance(node, list) and node:
        node[path[-1] % len(node)] = value
    elif isinstance(node, dict) and node:
        node[sorted(node)[path[-1] % len(node)]] = value
    return doc


@PROFILE
@given(path=st.lists(st.integers(0, 50), min_size=1, max_size=4), value=values)
def test_gate_on_any_baseline_keeps_the_exit_contract(judged_run, tmp_path, path, value):
    saved = tmp_path / "saved.json"
    if not saved.exists():
        assert invoke("baseline", "save", judged_run, "--out", saved).exit_code == 0
    base = json.loads(saved.read_text())
    mutated = tmp_path / "base.json"
    mutated.write_text(json.dumps(_mutated(base, ["rows", *path], value) if path[0] % 2 else _mutated(base, path, value)))
    exit_contract(invoke("gate", judged_run, "--baseline", mutated))


@FEW
@given(path=st.lists(st.integers(0, 50), min_size=1, max_size=4), value=values)
def test_gate_on_any_resealed_report_keeps_the_exit_contract(tiny_run, tmp_path, path, value):
    """Even a report.json the run's own manifest vouches for may hold anything: gate answers 0/1/2."""
    run = tmp_path / "run"
    if run.exists():
        shutil.rmtree(run)
    shutil.copytree(tiny_run, run)
    report = json.loads((run / "report.json").read_text())
    (run / "report.json").write_text(json.dumps(_mutated(report, path, value)))
    reseal(run)
    budget = tmp_path / "b.yaml"
    budget.write_text(yaml.safe_dump({"max_size_mb": 10, "max_latency_ms": {"tiny-ort": {"p90": 1000.0}}}))
    exit_contract(invoke("gate", run, "--budget", budget))
    exit_contract(invoke("report", run))


@FEW
@given(name=st.text(alphabet=string.printable + "ü/\\.:[]", min_size=0, max_size=20))
def test_an_output_path_never_lands_on_the_runs_record(judged_run, tmp_path, name):
    before = record(judged_run)
    target = judged_run / name
    budget = tmp_path / "b.yaml"
    budget.write_text(yaml.safe_dump({"max_size_mb": 10}))
    exit_contract(invoke("gate", judged_run, "--budget", budget, "--junit", target))
    after = record(judged_run)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing of the record changed
    assert no_junit_in_the_report(judged_run)  # and the JUnit file did not land on a report view
