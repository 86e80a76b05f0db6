"""Whole small ResNet-like torch models lowered by sw/frontend (max pool, residual block,
global average pool, linear; and a linear on a flattened map) compiled and run by the
functional simulator: every tensor equal to golden (sw/reference.run_graph), whose batched
run equals its single-image run."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shiftbook.config import load_config
from shiftbook.sim.compare import compare_tensors
from shiftbook.sim.functional import run_program
from shiftbook.sw.compiler import compile_graph, unpack_tensor
from shiftbook.sw.frontend import lower
from shiftbook.sw.reference import run_graph


class Block(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.conv2 = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + x)


class MiniResNet(nn.Module):
    """ResNet-18-like in miniature: stem conv (stride 2) + BN + ReLU, max pool 3x3 s2 p1,
    one basic block, then global average pool + linear (``head="gap"``) or flatten + linear
    on the whole map (``head="flat"``)."""

    def __init__(self, cin: int = 3, c: int = 6, classes: int = 5, head: str = "gap") -> None:
        super().__init__()
        self.head = head
        self.conv1 = nn.Conv2d(cin, c, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = Block(c)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c if head == "gap" else c * 16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer1(self.maxpool(self.relu(self.bn1(self.conv1(x)))))
        if self.head == "gap":
            x = self.avgpool(x)
        return self.fc(torch.flatten(x, 1))


SHAPE = (3, 16, 16)


def mini(seed: int = 0, head: str = "gap") -> MiniResNet:
    torch.manual_seed(seed)
    m = MiniResNet(head=head)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.3, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.normal_(0, 0.2, generator=g)
    return m.eval()


def lowered_case(head: str, config: str, seed: int = 0):
    cfg = load_config(config)
    cal = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(seed + 7))
    low = lower(mini(seed, head), calib=cal, config=cfg, input_shape=SHAPE)
    x = torch.randn(1, *SHAPE, generator=torch.Generator().manual_seed(seed + 11))
    q = np.asarray(low.quantize_input(x))[0]
    return cfg, low, {"x": q}


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("head", ["gap", "flat"])
def test_lowered_resnet_functional_equals_golden(config, head):
    cfg, low, inputs = lowered_case(head, config)
    g = low.graph
    kinds = [op.kind for op in g.ops]
    assert kinds[:4] == ["conv2d", "maxpool2d", "conv2d", "conv2d"]
    assert g.ops[3].residual == "maxpool"
    if head == "gap":
        assert kinds[4:] == ["sumpool2d", "linear"]
    else:
        assert kinds[4:] == ["conv2d"] and g.ops[4].kernel == (4, 4)
    golden = run_graph(g, inputs)
    batch = run_graph(g, {"x": np.stack([inputs["x"]] * 2)})
    for name in g.tensors:
        np.testing.assert_array_equal(golden[name], batch[name][1])
    assert np.abs(golden[g.outputs[0]]).max() > 0
    prog = compile_graph(g, cfg, inputs)
    res = run_program(cfg, prog.memory)
    got = {n: unpack_tensor(res.memory, p) for n, p in prog.tensors.items()}
    cmp = compare_tensors(prog.layers, golden, got)
    assert cmp.bit_exact, str(cmp)
    assert [lay.op for lay in prog.layers] == kinds
    assert res.cycles >= prog.ideal_cycles
