"""Intermediate features addressed by module name, captured with forward hooks.

Feature losses (hint, spatial attention, ND, OFA, layered self-KD, DHKD) name the modules whose output
(or input, for a classifier head) they need. Names are checked against the real model before training
starts, and a wrong one fails with the nearest valid names, so a typo never costs a training run.
"""

from __future__ import annotations

import difflib
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator, Literal

import torch
from torch import nn

from ..errors import RecipeError


@dataclass(frozen=True)
class Tap:
    """One feature to capture: the ``output`` of a module, or its ``input`` (the embedding a head sees).

    With ``energy_p`` the hook stores ``channel_energy(F, p)`` (N, H, W) instead of F (N, C, H, W): all
    that spatial attention needs of a teacher map, C times smaller, so the teacher-output cache of a
    pruning recovery holds a few MB where raw maps took hundreds.
    """

    module: str
    where: Literal["output", "input"] = "output"
    energy_p: float | None = None

    @property
    def key(self) -> str:
        base = self.module if self.where == "output" else f"{self.module}:input"
        return base if self.energy_p is None else f"{base}|energy{self.energy_p:g}"


def channel_energy(feature: torch.Tensor, p: float) -> torch.Tensor:
    """``mean_c |F|^p`` of an (N, C, H, W) map: the un-normalised spatial attention map, (N, H, W)."""
    if feature.ndim != 4:
        raise RecipeError(f"spatial attention needs (N, C, H, W) feature maps, got {tuple(feature.shape)}")
    return feature.abs().pow(p).mean(1)


def resolve_module(model: nn.Module, name: str, role: str, key: str) -> nn.Module:
    """``model``'s submodule ``name``, or a RecipeError naming ``key`` and the closest valid names."""
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return modules[name]
    valid = [n for n in modules if n]
    near = difflib.get_close_matches(name, valid, n=4, cutoff=0.3) or valid[:4]
    raise RecipeError(f"{key}: {role} has no module {name!r}; nearest valid names: {', '.join(near)}")


def last_linear(model: nn.Module, role: str, key: str) -> str:
    """The name of the model's last ``nn.Linear`` (the classifier head, for a default)."""
    names = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not names:
        raise RecipeError(f"{key}: {role} has no nn.Linear classifier head; name the head module explicitly")
    return names[-1]


@contextmanager
def capture(model: nn.Module, taps: list[Tap], store: dict[str, torch.Tensor]) -> Iterator[None]:
    """While active, every forward of ``model`` writes each tapped feature into ``store`` by ``Tap.key``."""
    modules = dict(model.named_modules())
    handles = []
    for tap in dict.fromkeys(taps):
        mod = modules[tap.module]
        keep = (lambda v: v) if tap.energy_p is None else (lambda v, p=tap.energy_p: channel_energy(v, p))
        if tap.where == "output":
            handles.append(mod.register_forward_hook(
                lambda _m, _i, out, k=tap.key, f=keep: store.__setitem__(k, f(_first(out)))))
        else:
            handles.append(mod.register_forward_pre_hook(
                lambda _m, inp, k=tap.key, f=keep: store.__setitem__(k, f(_first(inp)))))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _first(value: object) -> torch.Tensor:
    """Hooks see tuples for inputs (and for some outputs); the feature is the first tensor."""
    while isinstance(value, (tuple, list)):
        value = value[0]
    if not isinstance(value, torch.Tensor):
        raise RecipeError(f"a tapped module produced {type(value).__name__}, not a tensor")
    return value
