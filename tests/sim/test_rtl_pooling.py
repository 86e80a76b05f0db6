"""Pooling layers (MODE MAX / SUM) at L2: compiled, run on the RTL core (cached Verilator
builds of 'tiny' and 'small'), every tensor bit-exact against golden, RTL cycles at least the
ideal count; and a small torch network lowered by sw/frontend, every layer bit-exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shiftbook.config import load_config
from shiftbook.sim.compare import compare_tensors
from shiftbook.sw.bundle import write_bundle
from shiftbook.sw.compiler import compile_graph, unpack_tensor
from shiftbook.sw.reference import random_pool, run_graph

pytestmark = pytest.mark.rtl

RTL_CASES = {
    "max3x3-s2-p1": ("max", 5, 9, 9, (3, 3), (2, 2), (1, 1, 1, 1), 0),
    "max2x2-s2": ("max", 3, 8, 6, (2, 2), (2, 2), (0, 0, 0, 0), 0),
    "gsum8x8-s6": ("sum", 10, 8, 8, (8, 8), (1, 1), (0, 0, 0, 0), 6),
    "gsum7x7-s5": ("sum", 4, 7, 7, (7, 7), (1, 1), (0, 0, 0, 0), 5),
}


def _rtl(graph, inputs, config: str, tmp: Path):
    pytest.importorskip("cocotb")
    from shiftbook.sim.rtl.runner import run_bundle
    from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env
    try:
        setup_verilator_env()
    except ToolchainError as e:
        pytest.skip(str(e))
    cfg = load_config(config)
    golden = run_graph(graph, inputs)
    prog = compile_graph(graph, cfg, inputs)
    res = run_bundle(write_bundle(prog, graph, tmp / "bundle"))
    got = {n: unpack_tensor(res.memory, p) for n, p in prog.tensors.items()}
    return prog, res, golden, got, compare_tensors(prog.layers, golden, got)


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("case", list(RTL_CASES))
def test_pool_bit_exact_in_rtl(config, case, tmp_path):
    layer = random_pool(*RTL_CASES[case], seed=11)
    g, inp = layer.graph, layer.inputs
    prog, res, golden, got, cmp = _rtl(g, inp, config, tmp_path)
    assert cmp.bit_exact, str(cmp)
    np.testing.assert_array_equal(got["y"], golden["y"])
    assert int(res.cycles) >= prog.ideal_cycles > 0


class _Net(nn.Module):
    """stem conv s2 + ReLU, max pool 3x3 s2 p1, a residual conv, global average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, stride=2, padding=1)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(torch.relu(self.conv1(x)))
        x = torch.relu(self.conv2(x) + x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


def test_lowered_network_bit_exact_in_rtl(tmp_path):
    """A torch model lowered by sw/frontend (max pool + residual + global average pool +
    linear), compiled for 'tiny', every layer bit-exact in RTL."""
    from shiftbook.sw.frontend import lower

    torch.manual_seed(0)
    shape = (2, 12, 12)
    cfg = load_config("tiny")
    cal = torch.randn(4, *shape, generator=torch.Generator().manual_seed(1))
    low = lower(_Net().eval(), calib=cal, config=cfg, input_shape=shape)
    assert [op.kind for op in low.graph.ops] == ["conv2d", "maxpool2d", "conv2d", "sumpool2d",
                                                 "linear"]
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(2))
    inputs = {"x": np.asarray(low.quantize_input(x))[0]}
    _, _, golden, got, cmp = _rtl(low.graph, inputs, "tiny", tmp_path)
    assert cmp.bit_exact, str(cmp)
    assert len(cmp.layers) == 5 and all(lay["mismatches"] == 0 for lay in cmp.layers)
    assert np.abs(golden["avgpool"]).max() > 0
