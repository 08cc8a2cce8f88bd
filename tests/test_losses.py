"""Every distillation loss on small hand-computed cases: its value, and the direction it pushes.

Values are worked out by hand in the comments (2 or 3 classes, T=1, logits chosen so that the
softmaxes are round numbers), so these tests check the formulas, not a re-run of the same code.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from edgekd.config.schema import LossTerm
from edgekd.errors import RecipeError
from edgekd.models.features import Tap, channel_energy
from edgekd.losses import LOSSES, Batch, SetupInfo

LN3 = math.log(3.0)


def make(name: str, **params):
    cls = LOSSES.get(name)
    return cls(cls.Params(**params), f"test.{name}")


def batch(s, t=None, y=None, **kw) -> Batch:
    teachers = t if isinstance(t, list) else ([t] if t is not None else [])
    return Batch(logits=s, labels=y, index=torch.arange(len(s)), teacher_logits=teachers, **kw)


def setup_info(**kw) -> SetupInfo:
    base = dict(num_classes=2, n_train=4, student=nn.Identity(), teacher=None, student_features={},
                teacher_features={}, train_labels=None)
    return SetupInfo(**{**base, **kw})


def student_logits(*rows):
    return torch.tensor(rows, dtype=torch.float32, requires_grad=True)


def test_registry_order_is_the_documented_one():
    assert LOSSES.names() == ["kd", "kd-labelfree", "nkd", "dhkd", "multi-teacher", "taid", "bdkd", "pskd",
                              "layered-self", "hint", "spatial-attention", "nd", "ofa", "minilm", "minilm-v2",
                              "tinybert-hidden", "embedding-cosine", "detection-score-kd", "detection-box-kd",
                              "fgd"]


def test_kd_value_and_gradient():
    # p_t = [.75, .25], p_s = [.5, .5]: KL = .75 ln 1.5 + .25 ln .5 = 0.130812
    s = student_logits([0.0, 0.0])
    loss = make("kd", temperature=1.0, alpha=1.0)(batch(s, torch.tensor([[LN3, 0.0]]), torch.tensor([1])))
    assert loss.item() == pytest.approx(0.130812, abs=1e-5)
    loss.backward()
    assert s.grad[0, 0] < 0 < s.grad[0, 1]  # descent raises the teacher's favourite class
    s2 = student_logits([0.3, -0.2])  # α = 0: plain cross-entropy, the teacher plays no part
    plain = make("kd", temperature=1.0, alpha=0.0)(batch(s2, torch.tensor([[LN3, 0.0]]), torch.tensor([1])))
    assert plain.item() == pytest.approx(F.cross_entropy(s2, torch.tensor([1])).item())


def test_kd_labelfree_needs_no_labels():
    s = student_logits([0.0, 0.0])
    loss = make("kd-labelfree")(batch(s, torch.tensor([[LN3, 0.0]]), None))
    assert loss.item() == pytest.approx(0.130812, abs=1e-5)
    loss.backward()
    assert s.grad[0, 0] < 0
    assert not LOSSES.get("kd-labelfree").needs_labels


def test_nkd_value_and_gradient():
    # 3 classes, y=0, p_t = [.5, .25, .25], p_s uniform.
    # CE = ln 3; target part = -.5·ln(1/3); non-target (renormalised [.5,.5] vs [.5,.5]) = -1.5·ln .5
    s = student_logits([0.0, 0.0, 0.0])
    loss = make("nkd")(batch(s, torch.tensor([[math.log(2.0), 0.0, 0.0]]), torch.tensor([0])))
    assert loss.item() == pytest.approx(LN3 + 0.5 * LN3 + 1.5 * math.log(2.0), abs=1e-5)
    loss.backward()
    assert s.grad[0, 0] < 0


def test_nkd_non_target_part_ignores_target_mass():
    # Renormalisation: moving only the student's target logit leaves the non-target part unchanged.
    t, y = torch.tensor([[2.0, 1.0, -1.0]]), torch.tensor([0])
    nkd = make("nkd", ce=0.0)
    base = lambda s: -(F.softmax(t, 1)[0, 0] * F.log_softmax(s, 1)[0, 0]).item()  # noqa: E731
    a, b = torch.tensor([[0.0, 0.5, 0.1]]), torch.tensor([[3.0, 0.5, 0.1]])
    assert nkd(batch(a, t, y)).item() - base(a) == pytest.approx(nkd(batch(b, t, y)).item() - base(b), abs=1e-6)


def test_dhkd_adds_the_auxiliary_heads_logit_loss():
    student = nn.Sequential(nn.Flatten(), nn.Linear(3, 2))
    dhkd = make("dhkd", temperature=1.0, alpha=1.0, aux_weight=2.0)
    dhkd.bind(student, None)
    assert dhkd.student_taps() == [Tap("1", "input")]  # defaults to the last nn.Linear's input
    nn.init.zeros_(dhkd.aux_head.weight)
    nn.init.zeros_(dhkd.aux_head.bias)
    s, t = student_logits([0.0, 0.0]), torch.tensor([[LN3, 0.0]])
    b = batch(s, t, torch.tensor([0]), student_features={"1:input": torch.ones(1, 3)})
    # main head: KD 0.130812; aux head outputs 0, so MSE to [ln3, 0] is ln3²/2; weight 2
    assert dhkd(b).item() == pytest.approx(0.130812 + 2.0 * LN3 ** 2 / 2, abs=1e-5)
    dhkd(b).backward()
    assert dhkd.aux_head.bias.grad[0] < 0  # the aux head moves toward the teacher's logits


def test_multi_teacher_average_and_confidence_weighting():
    s = student_logits([0.0, 0.0])
    t1, t2, y = torch.tensor([[LN3, 0.0]]), torch.tensor([[0.0, LN3]]), torch.tensor([0])
    ref = [{"checkpoint": "x.safetensors"}]
    avg = make("multi-teacher", temperature=1.0, alpha=1.0, teachers=ref)
    assert avg(batch(s, [t1, t2], y)).item() == pytest.approx(0.0, abs=1e-6)  # ensemble [.5,.5] = student
    # weights softmax(-CE) = [.75, .25], so ensemble = [.625, .375]; KL vs [.5,.5] = 0.031584
    conf = make("multi-teacher", temperature=1.0, alpha=1.0, teachers=ref, weighting="confidence")
    loss = conf(batch(s, [t1, t2], y))
    assert loss.item() == pytest.approx(0.625 * math.log(1.25) + 0.375 * math.log(0.75), abs=1e-5)
    loss.backward()
    assert s.grad[0, 0] < 0
    with pytest.raises(RecipeError, match="at least two teachers"):
        make("multi-teacher")


def test_taid_interpolates_and_lambda_follows_its_schedule():
    # λ = .4: target = .6·[.5,.5] + .4·[.75,.25] = [.6,.4]; KL vs [.5,.5] = .6 ln 1.2 + .4 ln .8
    taid = make("taid", alpha=1.0)
    s = student_logits([0.0, 0.0])
    b = batch(s, torch.tensor([[LN3, 0.0]]), torch.tensor([0]))
    loss = taid(b)
    assert loss.item() == pytest.approx(0.6 * math.log(1.2) + 0.4 * math.log(0.8), abs=1e-5)
    loss.backward()
    assert s.grad[0, 0] < 0
    taid.after_step(1.0, batch(s, epoch=1, epochs=2))
    assert float(taid.lam) == pytest.approx(0.4 + 0.6 * 0.5)  # never below the linear schedule
    lam = float(taid.lam)
    for value in (0.9, 0.8, 0.7):  # a falling loss moves λ up beyond the schedule
        taid.after_step(value, batch(s, epoch=1, epochs=2))
    assert float(taid.lam) > lam


def test_bdkd_weights_reverse_kl_when_the_student_is_less_sure():
    # H(p_s=[.5,.5]) > H(p_t=[.75,.25]) -> reverse KL gets γ=2.
    # forward KL = 0.130812, reverse KL = .5 ln(.5/.75) + .5 ln(.5/.25) = 0.143841
    s = student_logits([0.0, 0.0])
    loss = make("bdkd", temperature=1.0, alpha=1.0)(batch(s, torch.tensor([[LN3, 0.0]]), torch.tensor([0])))
    assert loss.item() == pytest.approx(0.130812 + 2 * 0.143841, abs=1e-5)
    loss.backward()
    assert s.grad[0, 0] < 0
    # a student sharper than the teacher: forward KL (mass-covering) gets γ instead
    sharp = torch.tensor([[4.0, 0.0]])
    p_s, p_t = F.softmax(sharp, 1)[0], torch.tensor([0.75, 0.25])
    fwd = (p_t * (p_t.log() - p_s.log())).sum().item()
    rev = (p_s * (p_s.log() - p_t.log())).sum().item()
    got = make("bdkd", temperature=1.0, alpha=1.0)(batch(sharp, torch.tensor([[LN3, 0.0]]), torch.tensor([0])))
    assert got.item() == pytest.approx(2 * fwd + rev, abs=1e-5)


def test_pskd_uses_last_epochs_predictions_with_a_growing_weight():
    pskd = make("pskd", alpha_t=0.8)
    pskd.setup(setup_info(num_classes=2, n_train=1))
    s, y = student_logits([1.0, 0.0]), torch.tensor([1])
    first = pskd(batch(s, None, y, epoch=0, epochs=2))
    assert first.item() == pytest.approx(F.cross_entropy(s, y).item())  # epoch 0: one-hot target
    pskd.end_epoch(distributed=False)
    # epoch 1 of 2: α = .8·1/2 = .4; target = .6·[0,1] + .4·softmax([1,0])
    p = F.softmax(torch.tensor([1.0, 0.0]), 0)
    target = 0.6 * torch.tensor([0.0, 1.0]) + 0.4 * p
    second = pskd(batch(s, None, y, epoch=1, epochs=2))
    assert second.item() == pytest.approx(-(target * F.log_softmax(s.detach(), 1)[0]).sum().item(), abs=1e-5)
    assert second.item() < first.item()  # its own confident prediction softens the target


def test_layered_self_exits_learn_from_labels_and_the_final_head():
    layered = make("layered-self", exits=["0"], alpha=0.5)
    student = nn.Sequential(nn.Conv2d(1, 3, 1), nn.Flatten(), nn.LazyLinear(4))
    layered.bind(student, None)
    feature = torch.randn(2, 3, 4, 4, requires_grad=True)
    layered.setup(setup_info(num_classes=4, student_features={"0": feature}))
    nn.init.zeros_(layered.heads[0][-1].weight)
    nn.init.zeros_(layered.heads[0][-1].bias)
    s, y = student_logits([0.0] * 4, [0.0] * 4), torch.tensor([1, 2])
    # final CE = ln 4; exit outputs zeros: CE ln 4 with weight .5, KL to the (uniform) final 0
    loss = layered(batch(s, None, y, student_features={"0": feature}))
    assert loss.item() == pytest.approx(1.5 * math.log(4), abs=1e-5)
    loss.backward()
    assert layered.heads[0][-1].bias.grad is not None and feature.grad is not None  # exits train the trunk
    with pytest.raises(RecipeError, match=r"test.layered-self.exits.0: the student has no module 'blok'"):
        make("layered-self", exits=["blok"]).bind(nn.Sequential(nn.Linear(1, 1)), None)


def test_hint_is_mse_through_the_adapter():
    hint = make("hint", pairs=[["a", "b"]])
    fs, ft = torch.zeros(1, 2, 4, 4, requires_grad=True), torch.ones(1, 2, 2, 2)
    hint.setup(setup_info(student_features={"a": fs}, teacher_features={"b": ft}))
    with torch.no_grad():  # identity adapter
        hint.adapters[0].weight.copy_(torch.eye(2).view(2, 2, 1, 1))
        hint.adapters[0].bias.zero_()
    loss = hint(batch(student_logits([0.0]), None, None, student_features={"a": fs}, teacher_features={"b": ft}))
    assert loss.item() == pytest.approx(1.0)  # student pooled to 2x2 zeros vs ones
    loss.backward()
    assert (fs.grad < 0).all()  # every student activation is pushed up toward the teacher's


def test_spatial_attention_compares_normalised_maps_across_channel_counts():
    sa = make("spatial-attention", pairs=[["a", "b"]])
    fs = torch.zeros(1, 3, 2, 2)
    fs[0, :, 0, 0] = 1.0
    fs[0, :, 1, 1] = 0.5
    ft = torch.zeros(1, 5, 2, 2)  # another channel count: no adapter needed
    ft[0, :, 1, 1] = 2.0
    fs.requires_grad_(True)
    (tap,) = sa.teacher_taps()
    assert tap.key == "b|energy2"  # the teacher map is stored reduced to mean_c |F|^2, (N, H, W)
    stored = {tap.key: channel_energy(ft, 2.0)}
    assert stored[tap.key].shape == (1, 2, 2)
    b = batch(student_logits([0.0]), None, None, student_features={"a": fs}, teacher_features=stored)
    loss = sa(b)
    # a_s = [1, 0, 0, .25]/|.|, a_t = e3: |a_s - a_t|^2 = 2 - 2·.25/sqrt(1 + .0625)
    assert loss.item() == pytest.approx(2 - 0.5 / math.sqrt(1.0625), abs=1e-5)
    loss.backward()
    assert (fs.grad[0, :, 0, 0] > 0).all() and (fs.grad[0, :, 1, 1] < 0).all()  # attention moves to (1,1)
    same = batch(student_logits([0.0]), None, None, student_features={"a": ft[:, :3] * 7}, teacher_features=stored)
    assert sa(same).item() == pytest.approx(0.0, abs=1e-6)


def test_nd_rewards_direction_and_norm_toward_the_teacher_class_mean():
    nd = make("nd")
    student, teacher = nn.Sequential(nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2))
    nd.bind(student, teacher)
    embeddings = torch.tensor([[3.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    nd.setup(setup_info(student=student, teacher=teacher, train_labels=torch.tensor([0, 0, 1]),
                        student_features={"0:input": torch.zeros(1, 2)},
                        teacher_features_all=lambda tap: embeddings))
    assert torch.allclose(nd.directions, torch.tensor([[1.0, 0.0], [0.0, 1.0]]))

    def value(e_s, e_t, y=0):
        e_s = torch.tensor([e_s], requires_grad=True)
        b = batch(student_logits([0.0, 0.0]), None, torch.tensor([y]), student_features={"0:input": e_s},
                  teacher_features={"0:input": torch.tensor([e_t])})
        loss = nd(b)
        loss.backward()
        return loss.item(), e_s.grad[0]

    assert value([2.0, 0.0], [1.0, 0.0])[0] == pytest.approx(0.0)   # aligned, norm past the teacher's
    assert value([0.0, 1.0], [1.0, 0.0])[0] == pytest.approx(1.0)   # orthogonal
    loss, grad = value([1.0, 0.0], [2.0, 0.0])                       # aligned but short: 1 - 1/2
    assert loss == pytest.approx(0.5) and grad[0] < 0                # descent grows the norm along c_y


def test_ofa_weights_the_target_class_up():
    ofa = make("ofa", stages=["0"], eps=2.0)
    ofa.setup(setup_info(num_classes=2, student_features={"0": torch.zeros(1, 3)}))
    nn.init.zeros_(ofa.heads[0].weight)
    nn.init.zeros_(ofa.heads[0].bias)
    s = student_logits([0.0, 0.0])
    b = batch(s, torch.tensor([[LN3, 0.0]]), torch.tensor([0]), student_features={"0": torch.zeros(1, 3)})
    # weights ((p_t + onehot)^2 - onehot) = [1.75² - 1, .25²] = [2.0625, .0625]; -log p_s = ln 2 each;
    # final head and the (zero) branch give the same value, averaged
    loss = ofa(b)
    assert loss.item() == pytest.approx(2.125 * math.log(2.0), abs=1e-5)
    loss.backward()
    assert s.grad[0, 0] < 0


def test_loss_terms_validate_their_own_keys():
    assert LossTerm(name="kd", temperature=2.0).params().temperature == 2.0
    with pytest.raises(ValueError, match=r"loss 'kd', key 'temprature': Extra inputs are not permitted"):
        LossTerm(name="kd", temprature=2.0)
    with pytest.raises(ValueError, match="unknown loss 'kdd'; valid: kd, kd-labelfree"):
        LossTerm(name="kdd")


def test_teacher_cache_holds_the_reduced_attention_map_not_the_raw_feature():
    from edgekd.train.teacher_outputs import TeacherOutputs

    torch.manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.LazyLinear(3))
    x = torch.rand(10, 1, 6, 6)
    teacher(x[:1])
    raw, reduced = Tap("0"), Tap("0", energy_p=2.0)
    from edgekd.data.build import splits_from_arrays

    splits = splits_from_arrays((x, torch.zeros(10, dtype=torch.int64)), num_classes=3)
    outputs = TeacherOutputs.prepare([teacher], [raw, reduced], splits, augmented=False, key="t")
    _, feats = outputs(torch.arange(10), x)
    assert feats[raw.key].shape == (10, 16, 6, 6) and feats[reduced.key].shape == (10, 6, 6)  # 16x smaller
    assert torch.allclose(feats[reduced.key], feats[raw.key].pow(2).mean(1))
