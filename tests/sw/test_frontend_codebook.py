"""Frontend: codebook formats of a compressed model become IR codebook layers (WFMT = 1), with
a shift-code fallback (and a note in the summary) where folding changes the codes or the core
cannot decode the codebook."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from shiftbook import numerics as nx
from shiftbook.config import CoreConfig
from shiftbook.sw.compress import CodebookFormat, CompressedModel
from shiftbook.sw.frontend import lower
from shiftbook.sw.ir import Graph, Linear

SHAPE = (2, 8, 8)


class Net(nn.Module):
    """stem conv+BN+ReLU, conv+BN+ReLU, global average pool, linear."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 4, 3, padding=1, bias=False)
        self.bn0 = nn.BatchNorm2d(4)
        self.conv = nn.Conv2d(4, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(self.bn1(self.conv(x)))
        return self.fc(torch.flatten(self.avg(x), 1))


def net(seed: int = 0, bn_scale: float | None = None) -> Net:
    """Random weights and BN statistics; ``bn_scale``: every BN scale exactly that value."""
    torch.manual_seed(seed)
    m = Net()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.3, generator=g)
                mod.bias.normal_(0, 0.2, generator=g)
                if bn_scale is None:
                    mod.running_var.uniform_(0.5, 2.0, generator=g)
                    mod.weight.uniform_(0.5, 1.5, generator=g)
                else:
                    mod.running_var.fill_(1.0 - mod.eps)
                    mod.weight.fill_(bn_scale)
    return m.eval()


def book(k: int, d: int, exp_bits: int = 4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    top = (1 << exp_bits) - 1
    return np.asarray(nx.encode_shift(rng.random((k, d)) < 0.2, rng.integers(0, 2, (k, d)),
                                      rng.integers(0, top + 1, (k, d)), exp_bits), np.int64)


def fmt(shape: tuple[int, ...], k: int, d: int, exp_bits: int = 4, w_frac: int = 12,
        seed: int = 0) -> CodebookFormat:
    r = int(np.prod(shape[1:]))
    rng = np.random.default_rng(seed + 100)
    return CodebookFormat(k, d, exp_bits, book(k, d, exp_bits, seed),
                          rng.integers(0, k, (shape[0], r // d)),
                          np.full(shape[0], w_frac), shape)


def calib() -> torch.Tensor:
    return torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(7))


def ops(low) -> dict:
    return {op.name: op for op in low.graph.ops}


def rep(low) -> dict:
    return {r["name"]: r for r in low.layers}


def test_codebook_layers_become_ir_codebooks():
    fc = fmt((3, 8), 4, 4, seed=2)
    cv = fmt((8, 4, 3, 3), 16, 9, seed=1)
    cm = CompressedModel(net(bn_scale=0.5), {"conv": cv, "fc": fc})
    low = lower(cm, calib=calib(), input_shape=SHAPE)
    o, r = ops(low), rep(low)
    assert low.formats == {"conv": cv, "fc": fc} and low.notes == []
    assert r["conv"]["wfmt"] == "codebook k=16 d=9" and r["fc"]["wfmt"] == "codebook k=4 d=4"
    assert r["stem"]["wfmt"] == "shift" and o["stem"].weight_format is None
    for name, f in (("conv", cv), ("fc", fc)):
        w = o[name].weight_format
        assert w is not None and (w.k, w.d) == (f.k, f.d)
        np.testing.assert_array_equal(w.codebook, f.codebook.numpy())
        np.testing.assert_array_equal(w.indices, f.indices.numpy())
        # the decoded codebook is the op's weight, and it is the compressed layer's codes
        np.testing.assert_array_equal(w.decode().reshape(o[name].weight.shape), o[name].weight)
        np.testing.assert_array_equal(o[name].weight.reshape(f.shape), f.codes().numpy())
    assert isinstance(o["fc"], Linear)
    # the BN scale 1/2 is a shift: the codes stay, w_frac moves by one; no gain error
    np.testing.assert_array_equal(o["conv"].w_frac, np.full(8, 13))
    assert r["conv"]["gain"] == [1.0, 1.0] and r["conv"]["weights"] == "format"
    assert "codebook k=16 d=9" in low.summary()


def test_codebook_graph_round_trip_and_compiles_to_wfmt1(tmp_path):
    from shiftbook.config import PRESETS
    from shiftbook.sw.compiler import compile_graph

    cm = CompressedModel(net(bn_scale=2.0), {"conv": fmt((8, 4, 3, 3), 16, 9)})
    low = lower(cm, calib=calib(), input_shape=SHAPE)
    low.graph.save(tmp_path, "g")
    back = {op.name: op for op in Graph.load(tmp_path, "g").ops}
    w = back["conv"].weight_format
    assert w.k == 16 and w.d == 9
    np.testing.assert_array_equal(w.indices, ops(low)["conv"].weight_format.indices)
    cfg = PRESETS["tiny"]
    x = low.quantize_input(calib()[:1])[0]
    prog = compile_graph(low.graph, cfg, {low.input: x})
    wf = {lay.name: lay.weights.wfmt for lay in prog.layers
          if lay.op in ("conv2d", "linear")}
    assert wf == {"stem": 0, "conv": 1, "fc": 0}
    # the functional simulator runs the codebook layer bit-exactly against golden
    from shiftbook.sim.network import simulate_bundle
    from shiftbook.sw.bundle import write_bundle

    out = write_bundle(prog, low.graph, tmp_path / "b")
    rec = simulate_bundle(out, "functional").record
    assert rec["bit_exact"] and [lay["name"] for lay in rec["layers"]] == [
        "stem", "conv", "avg", "fc"]


def test_non_power_of_two_bn_keeps_codebook_with_gain():
    cv = fmt((8, 4, 3, 3), 16, 9)
    low = lower(CompressedModel(net(), {"conv": cv}), calib=calib(), input_shape=SHAPE)
    r = rep(low)["conv"]
    assert r["wfmt"] == "codebook k=16 d=9" and r["gain"] != [1.0, 1.0]
    np.testing.assert_array_equal(ops(low)["conv"].weight, cv.codes().numpy())


def test_negative_bn_scale_falls_back_to_shift_codes():
    cv = fmt((8, 4, 3, 3), 16, 9)
    m = net(bn_scale=1.0)
    with torch.no_grad():
        m.bn1.weight[3] = -1.0
    low = lower(CompressedModel(m, {"conv": cv}), calib=calib(), input_shape=SHAPE)
    op = ops(low)["conv"]
    assert op.weight_format is None and rep(low)["conv"]["wfmt"] == "shift"
    assert low.formats == {}
    assert low.notes == ["layer conv: codebook format not kept (a negative folded batch-norm "
                         "scale flips code signs); compiled as shift codes"]
    assert "note: layer conv: codebook format not kept" in low.summary()
    # channel 3's signs flipped (non-zero codes), the others equal the codebook's codes
    z, s, e = nx.shift_fields(cv.codes().numpy(), 4)
    z2, s2, e2 = nx.shift_fields(op.weight, 4)
    np.testing.assert_array_equal(e2, e)
    flip = np.zeros_like(s, dtype=bool)
    flip[3] = True
    np.testing.assert_array_equal(s2, np.where(flip & (z == 0), 1 - s, s))


@pytest.mark.parametrize("cfg, d, why", [
    (CoreConfig(max_k=8), 9, "codebook of k=16 codewords exceeds max_k=8"),
    (CoreConfig(max_d=4), 9, "block size d=9 exceeds max_d=4"),
    (CoreConfig(), 4, "d=4 does not fit the 3x3 kernel layout"),
])
def test_undecodable_codebook_falls_back(cfg, d, why):
    cv = fmt((8, 4, 3, 3), 16, d)
    low = lower(CompressedModel(net(bn_scale=1.0), {"conv": cv}), calib=calib(),
                input_shape=SHAPE, config=cfg)
    op = ops(low)["conv"]
    assert op.weight_format is None and rep(low)["conv"]["wfmt"] == "shift"
    assert len(low.notes) == 1 and why in low.notes[0], low.notes
    # the codes themselves are still kept exactly (per weight)
    np.testing.assert_array_equal(op.weight, cv.codes().numpy())
    assert low.formats == {"conv": cv}


def test_codebook_codes_reencoded_for_the_core_exp_bits():
    cv = fmt((8, 4, 3, 3), 16, 9, exp_bits=3)
    low = lower(CompressedModel(net(bn_scale=1.0), {"conv": cv}), calib=calib(),
                input_shape=SHAPE)
    op = ops(low)["conv"]
    w = op.weight_format
    assert w is not None and w.exp_bits == 4
    z, s, e = nx.shift_fields(cv.codebook.numpy(), 3)
    np.testing.assert_array_equal(w.codebook, nx.encode_shift(z, s, np.where(z != 0, 0, e), 4))
    np.testing.assert_array_equal(nx.decode_shift(op.weight, 4),
                                  nx.decode_shift(cv.codes().numpy(), 3))


def test_ptq_mode_drops_codebooks():
    low = lower(CompressedModel(net(bn_scale=1.0), {"conv": fmt((8, 4, 3, 3), 16, 9)}),
                calib=calib(), input_shape=SHAPE, weights="ptq")
    assert ops(low)["conv"].weight_format is None and low.formats == {} and low.notes == []
