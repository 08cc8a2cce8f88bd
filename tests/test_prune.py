"""Issue 5: the prune stage. Removal through Torch-Pruning on many architectures, the importance
criteria and ratio methods, group channel pruning, the latency table and its greedy choice, recovery
by distillation, and the artifact reloading without the original class."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch
from torch import nn

from edgekd.artifacts.artifact import Artifact, stage_artifacts
from edgekd.stages.channels import rebuild_float
from edgekd.errors import StageError
from edgekd.stages.prune.latency_lut import LatencyTable, choose_ratios, search_plan
from edgekd.stages.channels import ChannelGroup, apply_channel_plan, channel_plan, prune_channels
from edgekd.losses.base import Batch
from edgekd.stages.prune.sparsity import BNScaleL1, l1_rate, scale_groups
from edgekd.models.zoo import DigitsCNN, TinyCNN

from .conftest import FAST_LATENCY, TINY_DATA, invoke, save_model, write_yaml
from .models import ResidualCNN, quarter_digits_cnn
from edgekd.stages.channels import Cut

TORCHVISION = ["resnet18", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0", "regnet_x_400mf",
               "shufflenet_v2_x1_0", "convnext_tiny"]
SLOW = {"efficientnet_b0", "convnext_tiny", "regnet_x_400mf"}


def _outputs_after_rebuild(fresh: nn.Module, pruned: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The pruned model's output, and that of ``fresh`` rebuilt from the channel plan + the weights."""
    apply_channel_plan(fresh, x[:1], channel_plan(pruned))
    fresh.load_state_dict(pruned.state_dict())
    with torch.no_grad():
        return pruned.eval()(x), fresh.eval()(x)


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in TORCHVISION])
def test_torchvision_matrix_prunes_30_percent_and_exports(name, tmp_path):
    torchvision = pytest.importorskip("torchvision", reason="the vision extra (make test installs it)")
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10).eval()
    x = torch.randn(2, 3, 32, 32)
    params_before = sum(p.numel() for p in model.parameters())
    removed = prune_channels(model, x[:1], Cut(ratio=0.3), num_classes=10)
    assert removed, "nothing was pruned"
    assert sum(p.numel() for p in model.parameters()) < params_before
    with torch.no_grad():
        assert model.eval()(x).shape == (2, 10)
    path = tmp_path / f"{name}.onnx"
    torch.onnx.export(model, (x[:1],), str(path), dynamo=False, opset_version=17, input_names=["input"])
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x[:1].numpy()})[0]
    assert out.shape == (1, 10)
    # the saved form (architecture + channel plan + weights) rebuilds the same function
    got, rebuilt = _outputs_after_rebuild(torchvision.models.get_model(name, weights=None, num_classes=10), model, x)
    assert torch.allclose(got, rebuilt, atol=1e-5)


@pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning")  # timm's ViT asserts on shapes while traced
def test_vit_prunes_embedding_and_head_dims_consistently_and_exports(tmp_path):
    timm = pytest.importorskip("timm", reason="the vision extra (make test installs it)")

    def vit():
        return timm.create_model("vit_tiny_patch16_224", pretrained=False, img_size=32, patch_size=8,
                                 num_classes=10).eval()

    torch.manual_seed(0)
    model, x = vit(), torch.randn(2, 3, 32, 32)
    attn = model.blocks[0].attn
    heads, head_dim, embed = attn.num_heads, attn.head_dim, model.embed_dim
    removed = prune_channels(model, x[:1], Cut(ratio=0.3), num_classes=10)
    assert removed
    assert model.patch_embed.proj.out_channels < embed and model.pos_embed.shape[-1] == model.patch_embed.proj.out_channels
    for block in model.blocks:  # every head keeps the same, smaller, width; the head count is kept
        a = block.attn
        assert a.num_heads == heads and a.head_dim < head_dim and a.qkv.out_features == 3 * heads * a.head_dim
        assert a.proj.in_features == heads * a.head_dim
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    path = tmp_path / "vit.onnx"
    torch.onnx.export(model, (x[:1],), str(path), dynamo=False, opset_version=17, input_names=["input"])
    out = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x[:1].numpy()})[0]
    assert out.shape == (1, 10)
    got, rebuilt = _outputs_after_rebuild(vit(), model, x)
    assert torch.allclose(got, rebuilt, atol=1e-5)


@pytest.mark.parametrize("importance", ["l1", "l2", "bn-scale", "taylor"])
@pytest.mark.parametrize("global_ranking", [False, True])
def test_importance_criteria_follow_the_residual_add(importance, global_ranking):
    torch.manual_seed(0)
    model, x = ResidualCNN(num_classes=4), torch.rand(8, 1, 16, 16)
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):  # as training leaves them: unequal
        nn.init.uniform_(bn.weight, 0.1, 1.0)

    def gradients(m):
        nn.functional.cross_entropy(m(x), torch.arange(8) % 4).backward()

    removed = prune_channels(model, x[:1], Cut(ratio=0.5, importance=importance, global_ranking=global_ranking), num_classes=4, gradients=gradients)
    plan = channel_plan(model)
    # the add couples the stem and the block's second conv: they lose channels together (or neither does)
    assert plan["stem.0"] == plan["block.conv2"] and ("stem.0" in removed) == ("block.conv2" in removed)
    assert sum(plan.values()) < sum(channel_plan(ResidualCNN(num_classes=4)).values())
    if not global_ranking:  # every group loses half
        assert plan["stem.0"] == 8 and plan["block.conv1"] == 8 and plan["down.0"] == 12
    assert plan["head"] == 4  # the classifier keeps the label space
    got, rebuilt = _outputs_after_rebuild(ResidualCNN(num_classes=4), model, x)
    assert torch.allclose(got, rebuilt, atol=1e-6)


def test_l1_keeps_the_largest_channels():
    model = TinyCNN(num_classes=4)
    with torch.no_grad():
        w = model.features[0].weight
        w.mul_(0).add_(torch.arange(w.shape[0], dtype=torch.float32).view(-1, 1, 1, 1) + 1)  # channel i has |w| ∝ i+1
    kept_before = model.features[0].weight[:, 0, 0, 0].clone()
    prune_channels(model, torch.rand(1, 1, 16, 16), Cut(ratio=0.5, layer_ratios={"features.0": 0.5}, ignore=["features.4"]), num_classes=4)
    assert torch.equal(model.features[0].weight[:, 0, 0, 0], kept_before[8:])


def test_round_to_and_ignore_and_per_layer_ratios():
    model = DigitsCNN(width=1.0, num_classes=10)
    removed = prune_channels(model, torch.rand(1, 1, 32, 32), Cut(ratio=0.3, round_to=16, ignore=["features.8"], layer_ratios={"features.0": 0.5}), num_classes=10)
    plan = channel_plan(model)
    assert plan["features.8"] == 256 and "features.8" not in removed
    assert plan["features.0"] == 32  # its own ratio, not the default 0.3
    assert all(plan[n] % 16 == 0 for n in ("features.0", "features.4", "features.11"))


def test_a_layer_pruned_to_nothing_is_refused_by_name_and_left_intact():
    model = TinyCNN(num_classes=4)
    with torch.no_grad():
        model.features[1].weight.fill_(1e-4)  # every BN scale of the first conv is tiny: global |γ| takes them all
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(StageError, match="'features.0' with 0 of its 16 channels"):
        prune_channels(model, torch.rand(1, 1, 16, 16), Cut(ratio=0.4, importance="bn-scale", global_ranking=True), num_classes=4)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_l1_rate_schedules_and_bn_penalty_gradient():
    assert l1_rate(1e-3, 1e-4, "constant", 0.7) == 1e-3
    assert l1_rate(1e-3, 1e-4, "linear", 0.5) == pytest.approx(5.5e-4)
    assert l1_rate(1e-3, 1e-4, "cosine", 0.0) == pytest.approx(1e-3)
    assert l1_rate(1e-3, 1e-4, "cosine", 1.0) == pytest.approx(1e-4)
    model = TinyCNN(num_classes=4)
    with torch.no_grad():
        model.features[1].weight.copy_(torch.linspace(-1, 1, 16))
    term = BNScaleL1(0.5, 0.5, "constant")
    term.bind(model, None)
    value = term(Batch(logits=torch.zeros(1, 4), labels=None, index=torch.zeros(1), teacher_logits=[]))
    assert value.item() == pytest.approx(0.5 * (torch.linspace(-1, 1, 16).abs().sum() + 32).item())
    value.backward()
    assert torch.equal(model.features[1].weight.grad, 0.5 * torch.sign(torch.linspace(-1, 1, 16)))
    assert not list(term.parameters())  # the BN layers are the student's, not registered in the loss


def test_scale_groups_split_layers_by_feature_map_size():
    groups = scale_groups(DigitsCNN(), torch.rand(1, 1, 32, 32), ["features.0", "features.4", "features.8",
                                                                  "features.11", "classifier"])
    assert groups == {"32x32": ["features.0"], "16x16": ["features.4"], "8x8": ["features.8", "features.11"],
                      "1x1": ["classifier"]}


def _group(root: str, scores: list[float]) -> ChannelGroup:
    return ChannelGroup(root, len(scores), torch.tensor(scores, dtype=torch.float32))


def test_latency_table_predicts_additively_and_the_greedy_choice_buys_ms_cheapest():
    table = LatencyTable("t", base_ms=10.0, steps=[0.5], groups={"a": [8.0], "b": [9.5], "c": [9.0]})
    assert table.predict({"a": 0.5, "c": 0.5}) == pytest.approx(7.0)
    assert table.predict({"a": 0.25}) == pytest.approx(9.0)  # interpolated between 0 and the step
    groups = [_group("a", [1, 1, 1, 1]), _group("b", [1, 1, 1, 1]), _group("c", [0.01, 0.01, 2, 2])]
    # c saves 1 ms for almost no importance; a saves 2 ms for 2 units: c goes first, then a
    choice = choose_ratios(table, groups, budget_ms=9.5, key="k")
    assert choice.ratios == {"c": 0.5} and choice.predicted_ms == pytest.approx(9.0)
    choice = choose_ratios(table, groups, budget_ms=7.5, key="k")
    assert choice.ratios == {"a": 0.5, "c": 0.5}
    with pytest.raises(StageError, match="k: the latency budget 6.000 ms cannot be met"):
        choose_ratios(table, groups, budget_ms=6.0, key="k")


def test_latency_prediction_is_bounded_below_by_zero():
    table = LatencyTable("t", base_ms=1.0, steps=[0.5], groups={"a": [0.2], "b": [0.3]})
    assert table.predict({"a": 0.5, "b": 0.5}) == 0.0  # the plain sum, -0.5 ms, is impossible


def test_latency_search_aims_lower_after_a_miss_then_bisects_to_the_least_pruning_that_meets():
    table = LatencyTable("t", base_ms=10.0, steps=[0.25, 0.5, 0.75],
                         groups={g: [9.5, 9.0, 8.5] for g in "abcd"})
    groups = [_group(g, [1.0] * 8) for g in "abcd"]

    def measure(ratios):  # the runtime gives back only half of each predicted saving
        return 10.0 - 0.5 * (10.0 - table.predict(ratios))

    attempts, kept = search_plan(table, groups, budget_ms=8.5, key="k", measure=measure, max_attempts=4)
    assert attempts[0].planned_for_ms == 8.5 and attempts[0].measured_ms > 8.5  # plan for the budget: missed
    assert attempts[1].planned_for_ms < attempts[0].planned_for_ms  # aimed lower by the observed shortfall
    assert attempts[1].measured_ms <= 8.5  # ... and met
    assert attempts[2].planned_for_ms == pytest.approx((attempts[0].planned_for_ms + attempts[1].planned_for_ms) / 2)
    met = [a for a in attempts if a.measured_ms <= 8.5]
    assert met and attempts[kept] in met
    assert attempts[kept].importance_removed == min(a.importance_removed for a in met)
    assert all(a.planned_for_ms >= 10.0 - 4 * 1.5 for a in attempts)  # never below the table's floor
    assert len({tuple(sorted(a.ratios.items())) for a in attempts}) == len(attempts)  # no plan timed twice


def test_latency_search_keeps_the_fastest_attempt_when_none_meets():
    table = LatencyTable("t", base_ms=10.0, steps=[0.5], groups={"a": [8.0], "b": [9.0]})
    groups = [_group("a", [1.0] * 4), _group("b", [1.0] * 4)]
    attempts, kept = search_plan(table, groups, 8.0, "k", measure=lambda r: 9.9 - 0.1 * len(r), max_attempts=3)
    assert attempts[kept].measured_ms == min(a.measured_ms for a in attempts) > 8.0


def _prune_recipe(tmp_path, stage: dict, extra_stages: list | None = None, targets: list | None = None,
                  arch: str = "edgekd:tiny_cnn", teacher_check: bool = True) -> str:
    return write_yaml(tmp_path / "r.yaml", {
        "name": "prune", "arch": arch, "data": TINY_DATA, "targets": targets or [], "teacher_check": teacher_check,
        "stages": [{"stage": "prune", **stage}, *(extra_stages or []), {"stage": "export"}]})


def test_prune_stage_recovers_by_distillation_and_reloads_without_the_class(tiny_teacher, tmp_path):
    recipe = _prune_recipe(tmp_path, {"ratio": 0.5, "recovery": {"epochs": 2, "lr": 0.01}})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    art = next(a for a in stage_artifacts(tmp_path / "run" / "stages" / "00-prune") if a.variant == "student-fp32")
    m = art.meta["metrics"]
    assert m["params"] < m["params_before"] and m["macs"] < m["macs_before"]
    assert art.meta["channels"]["features.0"] == 8 and art.meta["channels"]["features.4"] == 16
    # the default recovery loss: kd + spatial attention at the last pruned layer of each map scale
    assert [t["name"] for t in m["recovery"]["loss"]] == ["kd", "spatial-attention"]
    assert m["recovery"]["loss"][1]["pairs"] == [["features.0", "features.0"], ["features.4", "features.4"]]
    assert len(m["recovery"]["history"]) == 2
    # reload: arch spec + channel plan + safetensors, no pickled code; same outputs as the ONNX file
    model = rebuild_float(art)
    x = np.random.default_rng(0).random((1, 1, 16, 16), dtype=np.float32)
    onnx_out = ort.InferenceSession(str(tmp_path / "run" / "models" / "student-fp32.onnx")).run(None, {"input": x})[0]
    with torch.no_grad():
        assert np.allclose(model(torch.from_numpy(x)).numpy(), onnx_out, atol=1e-4)


def test_distill_after_prune_continues_the_pruned_student(tiny_teacher, tmp_path):
    recipe = _prune_recipe(tmp_path, {"method": "global", "ratio": 0.4, "importance": "l2", "recovery": {"epochs": 0}},
                           [{"stage": "distill", "epochs": 1}])
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    pruned_plan = json.loads((tmp_path / "run" / "stages" / "00-prune" / "stage.json").read_text())
    student = next(a for a in manifest["artifacts"] if a["variant"] == "student-fp32")
    assert student["stage"] == "distill" and student["parent"] == "teacher-fp32"
    assert student["meta"]["channels"] == pruned_plan["artifacts"][0]["meta"]["channels"]  # not student.width's
    assert student["meta"]["pruned"]["params"] < student["meta"]["pruned"]["params_before"]


def test_group_pattern_typo_exits_2_with_the_key_and_near_names(tiny_teacher, tmp_path):
    recipe = _prune_recipe(tmp_path, {"method": "groups", "group_ratios": {"featres.0": 0.5}})
    result = invoke("compress", tiny_teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 2
    assert "stages.0.group_ratios.featres.0: 'featres.0' matches no conv/linear layer; e.g. features.0" in result.output


def test_gcp_sparse_trains_then_thresholds_each_scale_group(tmp_path):
    torch.manual_seed(0)
    teacher = save_model(quarter_digits_cnn(), tmp_path / "t.safetensors")
    recipe = _prune_recipe(tmp_path, {"method": "gcp", "ratio": 0.5, "group_ratios": {"8x8": 0.25},
                                      "sparse": {"epochs": 2, "l1": 1e-2, "l1_final": 1e-3, "lr": 0.01},
                                      "recovery": {"epochs": 1}}, arch="tests.models:quarter_digits_cnn",
                           teacher_check=False)  # untrained: the test is about which channels go
    result = invoke("compress", teacher, "--recipe", recipe, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "run" / "stages" / "00-prune" / "stage.json").read_text())
    meta = record["artifacts"][0]["meta"]
    m = meta["metrics"]
    assert m["scale_groups"] == {"16x16": 1, "8x8": 1, "4x4": 2}
    assert len(m["sparse_training"]["history"]) == 2
    # per scale: 50% of the 16x16 and 4x4 groups' channels, 25% at 8x8 (widths 16, 32, 64, 64)
    assert meta["channels"]["features.0"] == 8 and meta["channels"]["features.4"] == 24
    assert meta["channels"]["features.8"] + meta["channels"]["features.11"] == 64


def test_latency_method_builds_a_cached_table_and_refuses_an_impossible_budget(tiny_teacher, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEKD_CACHE", str(tmp_path / "cache"))
    target = write_yaml(tmp_path / "ov.yaml", {"name": "tiny-ov", "backend": "openvino", "threads": 1,
                                               "precision_hint": "f32", "latency": FAST_LATENCY})
    generous = {"method": "latency", "latency": {"target": str(target), "max_latency_ms": 1000.0, "steps": [0.5]},
                "recovery": {"epochs": 0}}
    for run in ("a", "b"):
        result = invoke("compress", tiny_teacher, "--recipe", _prune_recipe(tmp_path, generous), "--out",
                        tmp_path / run)
        assert result.exit_code == 0, result.output
    assert "latency table: reused" in result.output  # the second run measured nothing again
    tables = list((tmp_path / "cache" / "latency-lut").glob("tiny-ov-*.json"))
    assert len(tables) == 1 and set(json.loads(tables[0].read_text())["groups"]) == {"features.0", "features.4"}
    m = json.loads((tmp_path / "b" / "stages" / "00-prune" / "stage.json").read_text())["artifacts"][0]["meta"]
    lat = m["metrics"]["latency"]
    assert lat["met"] and lat["ratios"] == {} and lat["measured_ms"] > 0  # nothing needed pruning
    impossible = {**generous, "latency": {**generous["latency"], "max_latency_ms": 1e-6}}
    result = invoke("compress", tiny_teacher, "--recipe", _prune_recipe(tmp_path, impossible), "--out", tmp_path / "c")
    assert result.exit_code == 1
    assert "stages.0.latency.max_latency_ms: the latency budget 0.000 ms cannot be met" in result.output
