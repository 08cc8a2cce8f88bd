"""Every config error class fails before any work, with file, key and valid choices on one line."""

from __future__ import annotations

import pytest

from edgekd.config.schema import RECIPES_DIR, TARGETS_DIR, builtin_names, load_budget
from edgekd.backends import load_target
from edgekd.run.recipe import load_recipe
from edgekd.errors import BudgetError, RecipeError, TargetError

from .conftest import invoke, write_yaml

GOOD_RECIPE = {"name": "r", "stages": [{"stage": "distill"}, {"stage": "export"}]}


@pytest.mark.parametrize("name", builtin_names(RECIPES_DIR))
def test_builtin_recipes_validate(name):
    assert load_recipe(name).name == name


@pytest.mark.parametrize("name", builtin_names(TARGETS_DIR))
def test_builtin_targets_validate(name):
    assert load_target(name).name == name


def test_top_level_dirs_point_at_the_packaged_builtins():
    from pathlib import Path

    root = Path(__file__).parent.parent
    assert sorted(p.name for p in (root / "recipes").glob("*.yaml")) == sorted(p.name for p in RECIPES_DIR.glob("*.yaml"))
    assert sorted(p.name for p in (root / "targets").glob("*.yaml")) == sorted(p.name for p in TARGETS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("data, needles", [
    ({**GOOD_RECIPE, "epochs": 3}, ["unknown key 'epochs'", "valid keys:", "stages"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "distill", "epoch": 3}, {"stage": "export"}]},
     ["unknown key 'stages.0.distill.epoch'", "valid keys:", "epochs"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "distill", "epochs": "many"}, {"stage": "export"}]},
     ["stages.0.distill.epochs", "integer"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "prun"}, {"stage": "export"}]}, ["'prune'", "'distill'", "'export'"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "distill"}, {"stage": "prune"}, {"stage": "export"}]}, ["order"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "prune", "method": "latency"}, {"stage": "export"}]},
     ["needs 'latency: {target"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "prune", "group_ratios": {"a*": 0.2}}, {"stage": "export"}]},
     ["'group_ratios' applies to methods 'groups' and 'gcp'"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "prune", "method": "latency", "latency": {"max_latency_ms": 1,
                                                                                   "steps": [0.5, 0.2]}},
                                {"stage": "export"}]}, ["stages.0.prune.latency.steps", "increasing"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "export"}, {"stage": "distill"}]}, ["must end with exactly one 'export'"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "quantize"}, {"stage": "distill"}, {"stage": "export"}]}, ["order"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "distill", "loss": "kdd"}, {"stage": "export"}]}, ["unknown loss 'kdd'", "kd"]),
    ({**GOOD_RECIPE, "stages": [{"stage": "quantize", "mode": "int4"}, {"stage": "export"}]}, ["stages.0.quantize.mode", "'qat'", "'ptq'"]),
    ({**GOOD_RECIPE, "data": {"source": "imagenet"}}, ["data.source", "'digits'", "'npz'"]),
    ({**GOOD_RECIPE, "data": {"source": "npz"}}, ["needs 'path'"]),
    ({**GOOD_RECIPE, "data": {"source": "npz", "path": "x.npz", "channels": 3}}, ["'channels' does not apply"]),
    ({**GOOD_RECIPE, "data": {"split": [0.5, 0.5, 0.5]}}, ["data.split", "summing to 1"]),
    ({"stages": [{"stage": "export"}]}, ["missing key 'name'"]),
    ({**GOOD_RECIPE, "student": {"width": 0.3, "arch": "edgekd:tiny_cnn"}}, ["give one of 'width', 'arch' or 'layers', not width and arch"]),
    ({**GOOD_RECIPE, "student": {"widht": 0.3}}, ["unknown key 'student.widht'", "width, arch"]),
])
def test_recipe_errors_name_file_key_and_choices(tmp_path, data, needles):
    path = write_yaml(tmp_path / "bad.yaml", data)
    with pytest.raises(RecipeError) as exc:
        load_recipe(path)
    message = str(exc.value)
    assert str(path) in message and "\n" not in message
    for needle in needles:
        assert needle in message, message


def test_each_backend_owns_its_target_options():
    """Every backend's options are the fields of its own target model: a target of that backend has them
    (with their defaults), a target of another backend has none of them, and naming one on another
    backend is refused with that backend's keys."""
    from edgekd.backends import BACKENDS, checked_target
    from edgekd.config.target import COMMON_TARGET_KEYS

    for name in BACKENDS:
        cls = BACKENDS.get(name)
        device = cls.capabilities.devices[0]
        own = checked_target({"name": "t", "backend": name, "device": device})
        assert type(own) is cls.target_model and set(cls.options()) == set(type(own).model_fields) - set(COMMON_TARGET_KEYS)
        for other in BACKENDS:
            for key in set(BACKENDS.get(other).options()) - set(cls.options()):
                assert not hasattr(own, key)
                value = getattr(checked_target({"name": "t", "backend": other,
                                                "device": BACKENDS.get(other).capabilities.devices[0]}), key)
                with pytest.raises(ValueError, match=f"key '{key}' does not apply to backend '{name}'; its keys: "
                                                     f"{', '.join(COMMON_TARGET_KEYS + cls.options())}"):
                    checked_target({"name": "t", "backend": name, "device": device, key: value})


def test_target_errors(tmp_path):
    with pytest.raises(TargetError, match="unknown backend 'tflite'.*onnxruntime, openvino, tensorrt"):
        load_target(write_yaml(tmp_path / "t1.yaml", {"name": "t", "backend": "tflite"}))
    with pytest.raises(TargetError, match="t2.yaml: key 'precision_hint' does not apply to backend 'onnxruntime'; "
                                          "its keys: .*inter_op_threads, spinning"):
        load_target(write_yaml(tmp_path / "t2.yaml", {"name": "t", "backend": "onnxruntime", "precision_hint": "f32"}))
    with pytest.raises(TargetError, match="keys 'spinning', 'workspace_mb' do not apply to backend 'openvino'"):
        load_target(write_yaml(tmp_path / "t3.yaml", {"name": "t", "backend": "openvino", "spinning": False,
                                                      "workspace_mb": 64}))
    with pytest.raises(TargetError, match="device 'NPU' is not supported by backend 'openvino'; valid: CPU, GPU"):
        load_target(write_yaml(tmp_path / "t4.yaml", {"name": "t", "backend": "openvino", "device": "NPU"}))
    with pytest.raises(TargetError, match="device 'GPU' is not supported by backend 'onnxruntime'; valid: CPU, CUDA"):
        load_target(write_yaml(tmp_path / "t5.yaml", {"name": "t", "backend": "onnxruntime", "device": "GPU"}))
    with pytest.raises(TargetError, match="key 'precision' does not apply to backend 'onnxruntime'"):
        load_target(write_yaml(tmp_path / "t6.yaml", {"name": "t", "backend": "onnxruntime", "precision": "int8"}))
    with pytest.raises(TargetError, match="key 'precision'.*got 'int4'"):
        load_target(write_yaml(tmp_path / "t7.yaml", {"name": "t", "backend": "tensorrt", "device": "GPU",
                                                      "precision": "int4"}))
    assert load_target(write_yaml(tmp_path / "t8.yaml", {"name": "t", "backend": "openvino", "device": "GPU.1",
                                                         "streams": 2})).streams == 2
    with pytest.raises(TargetError, match="latency.runs"):
        load_target(write_yaml(tmp_path / "t3.yaml", {"name": "t", "backend": "openvino", "latency": {"runs": 0}}))
    with pytest.raises(TargetError, match="not a file and not a built-in target.*cpu-openvino"):
        load_target("cpu-tpu")


def test_budget_errors(tmp_path):
    with pytest.raises(BudgetError, match="max_latency_ms.cpu-openvino.p75"):
        load_budget(write_yaml(tmp_path / "b.yaml", {"max_latency_ms": {"cpu-openvino": {"p75": 1.0}}}))
    with pytest.raises(BudgetError, match="unknown key 'max_size'.*max_size_mb"):
        load_budget(write_yaml(tmp_path / "b2.yaml", {"max_size": 1}))
    with pytest.raises(BudgetError, match="unknown key 'input_quant'"):  # a quantize key, not a budget's
        load_budget(write_yaml(tmp_path / "b3.yaml", {"input_quant": "signed"}))
    with pytest.raises(BudgetError, match="file not found"):
        load_budget(tmp_path / "missing.yaml")


def test_yaml_problems(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: [unclosed\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)
    bad.write_text("- a list\n")
    with pytest.raises(RecipeError, match="expected a mapping"):
        load_recipe(bad)
    bad.write_text("!!python/object/apply:os.system ['true']\n")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(bad)


def test_cli_reports_bad_recipe_with_exit_2_and_no_traceback(tmp_path):
    path = write_yaml(tmp_path / "bad.yaml", {**GOOD_RECIPE, "stagez": []})
    before = path.read_bytes()
    result = invoke("compress", "--recipe", path, "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "unknown key 'stagez'" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()  # failed before any work
    assert path.read_bytes() == before


def test_cli_unknown_target_and_data_exit_2(tmp_path):
    assert invoke("compress", "--target", "nope", "--out", tmp_path / "o").exit_code == 2
    result = invoke("compress", "--data", "csv:x.csv", "--out", tmp_path / "o2")
    assert result.exit_code == 2 and "--data 'csv:x.csv'" in result.output
