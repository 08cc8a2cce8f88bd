"""Chunks, splits and sizes do not make Brevitas' requantizers signed (edgekd.quant_signs)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from edgekd.quant_signs import pieces_keep_sign
from edgekd.quantization import quantize_model


class ShuffleBlocks(nn.Module):
    """Two shufflenet units: ``cat(x1, branch(x2))`` of ReLU outputs, a channel shuffle written with
    ``x.size()`` and ``.contiguous()``, and the next unit's ``chunk``."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU())
        self.branches = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                                                    nn.ReLU()) for _ in range(2))
        self.head = nn.Linear(16, 10)

    @staticmethod
    def shuffle(x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.size()
        x = x.view(b, 2, c // 2, h, w)
        return torch.transpose(x, 1, 2).contiguous().view(b, c, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for branch in self.branches:
            x1, x2 = x.chunk(2, dim=1)
            x = self.shuffle(torch.cat((x1, branch(x2)), dim=1))
        return self.head(x.mean((2, 3)))


def test_concats_of_relu_outputs_read_through_chunks_get_unsigned_quantizers():
    torch.manual_seed(0)
    qmodel = quantize_model(ShuffleBlocks().eval(), unsigned_input=True, example=torch.rand(1, 3, 8, 8))
    concat_quants = {n: m for n, m in qmodel.named_modules() if n.startswith("cat") and n.endswith("_quant") and "." not in n}
    assert concat_quants, "the second unit's concat has its own requantizer"
    assert {n: m.act_quant.is_signed for n, m in concat_quants.items()} == dict.fromkeys(concat_quants, False)


def test_brevitas_gets_its_own_rule_back_even_when_quantizing_fails():
    from brevitas.graph import quantize_impl

    original = quantize_impl.are_inputs_unsigned
    with pytest.raises(RuntimeError, match="inside"):
        with pieces_keep_sign():
            assert quantize_impl.are_inputs_unsigned is not original
            raise RuntimeError("inside")
    assert quantize_impl.are_inputs_unsigned is original
