"""Network frontend: BN folding, lowering of a small ResNet block, errors, calibration, .pt2."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from shiftbook import numerics as nx
from shiftbook.config import CoreConfig
from shiftbook.sw.frontend import (
    FrontendError,
    MaxPool2d,
    SumPool2d,
    act_frac,
    export_module,
    fold_batchnorm,
    lower,
    quantize_input,
    save_pt2,
    trace_program,
)
from shiftbook.sw.ir import Conv2d, Graph, Linear
from shiftbook.sw.reference import run_graph

SHAPE = (2, 8, 8)


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
        y = self.bn2(self.conv2(y))
        return self.relu(y + x)


class Tiny(nn.Module):
    """stem conv+BN+ReLU, one basic block with an identity shortcut, max pool, global average
    pool, flatten, linear."""

    def __init__(self, cin: int = 2, c: int = 4, classes: int = 3) -> None:
        super().__init__()
        self.stem = nn.Conv2d(cin, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU()
        self.block = Block(c)
        self.pool = nn.MaxPool2d(2, 2)
        self.avg = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(c, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn(self.stem(x)))
        x = self.pool(self.block(x))
        return self.fc(torch.flatten(self.avg(x), 1))


def tiny(seed: int = 0, pow2: bool = False) -> Tiny:
    """Random weights and BN statistics; ``pow2``: every weight and every BN scale an exact
    power of two (so only activation rounding separates integer from float)."""
    torch.manual_seed(seed)
    m = Tiny()
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.normal_(0, 0.3, generator=g)
                mod.running_var.uniform_(0.5, 2.0, generator=g)
                mod.weight.uniform_(0.5, 1.5, generator=g)
                mod.bias.normal_(0, 0.2, generator=g)
                if pow2:
                    k = torch.randint(-1, 2, mod.weight.shape, generator=g).to(torch.float32)
                    mod.weight.copy_(torch.exp2(k) * torch.sqrt(mod.running_var + mod.eps))
            elif isinstance(mod, nn.Conv2d | nn.Linear) and pow2:
                w = mod.weight
                e = torch.randint(-5, 0, w.shape, generator=g).to(torch.float32)
                s = torch.randint(0, 2, w.shape, generator=g).to(torch.float32) * 2 - 1
                w.copy_(s * torch.exp2(e))
    return m.eval()


def calib(n: int = 8, seed: int = 3) -> torch.Tensor:
    return torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- BN folding
def test_bn_folding_is_exact_in_float():
    m = tiny(0)
    net = trace_program(export_module(m, SHAPE))
    x = calib(4).double()
    ref = m.double()(x)
    got = net.logits(x)
    assert torch.max(torch.abs(ref - got)).item() < 1e-12
    # every BN was folded: the float net has exactly the weighted layers plus the pools
    assert [lay.kind for lay in net.layers] == ["conv", "conv", "conv", "maxpool", "sumpool",
                                                "linear"]
    assert [lay.bn for lay in net.layers[:3]] == ["bn", "block.bn1", "block.bn2"]
    # hand-fold the stem: w * g / sqrt(var + eps), (0 - mean) * g / sqrt(var + eps) + beta
    bn = m.bn
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).double()
    np.testing.assert_allclose(net.layers[0].weight,
                               (m.stem.weight.double() * s[:, None, None, None]).detach(),
                               rtol=1e-15, atol=0)
    np.testing.assert_allclose(net.layers[0].bias,
                               (bn.bias.double() - bn.running_mean.double() * s).detach(),
                               rtol=1e-14, atol=1e-15)


def test_fold_batchnorm_module_keeps_outputs():
    m = tiny(1)
    f = fold_batchnorm(m, SHAPE)
    assert not any(isinstance(x, nn.BatchNorm2d) for x in f.modules())
    x = calib(3)
    torch.testing.assert_close(f.double()(x.double()), m.double()(x.double()), rtol=1e-6,
                               atol=1e-6)


# ---------------------------------------------------------------- lowering
def test_lower_tiny_resnet_block_structure_and_scales():
    m = tiny(2)
    cal = calib()
    low = lower(m, calib=cal, input_shape=SHAPE)
    g = low.graph
    kinds = [(op.kind, op.name) for op in g.ops]
    assert kinds == [("conv2d", "stem"), ("conv2d", "block.conv1"), ("conv2d", "block.conv2"),
                     ("maxpool2d", "pool"), ("sumpool2d", "avg"), ("linear", "fc")]
    stem, c1, c2, mp, sp, fc = g.ops
    assert stem.relu and c1.relu and c2.relu and not fc.relu
    assert c2.residual == "stem" and c1.residual is None      # the identity shortcut
    assert g.tensors["x"].shape == SHAPE and g.tensors["fc"].shape == (3, 1, 1)
    assert g.tensors["pool"].frac == g.tensors["block.conv2"].frac
    # scales: shift = in.frac + w_frac - out.frac; res_shift = acc_frac - residual.frac
    for op in (stem, c1, c2, fc):
        acc_frac = g.tensors[op.input].frac + op.w_frac
        np.testing.assert_array_equal(op.shift, acc_frac - g.tensors[op.output].frac)
    np.testing.assert_array_equal(
        c2.res_shift, g.tensors["block.conv1"].frac + c2.w_frac - g.tensors["stem"].frac)
    assert sp.shift == g.tensors["pool"].frac - g.tensors["avg"].frac
    # the average pool's 1/16 is in fc's weights: fc sees the sum of the 4x4 window
    fl = low.net
    np.testing.assert_allclose(fl.layer("fc").weight[:, :, 0, 0],
                               m.fc.weight.detach().double().numpy() / 16, rtol=1e-15)
    # the stem's bias is the (bias-corrected) folded bias at accumulator scale: within the
    # correction of the folded float bias
    acc_frac = g.tensors["x"].frac + stem.w_frac
    b_float = fl.layer("stem").bias * np.exp2(acc_frac)
    assert np.all(np.abs(stem.bias - b_float) <= np.abs(b_float) * 0.5 + 2.0 ** acc_frac)
    g.validate()


def test_integer_network_tracks_float_with_power_of_two_weights():
    m = tiny(3, pow2=True)
    cal = calib(16)
    low = lower(m, calib=cal, input_shape=SHAPE)
    assert all(r.get("weights") in (None, "detected") for r in low.layers)
    assert all(r.get("gain", [1, 1]) == [1.0, 1.0] for r in low.layers)
    x = calib(16, seed=9)
    ref = m.double()(x.double()).detach().numpy()
    got = low.logits(x)
    err = np.max(np.abs(got - ref))
    assert err < 0.08 * np.max(np.abs(ref)), err
    # codes were kept: decoded stem weights equal the model's weights times the BN scale
    stem = low.graph.ops[0]
    w = nx.decode_shift(stem.weight, stem.exp_bits) * np.exp2(-stem.w_frac)[:, None, None, None]
    np.testing.assert_allclose(w, low.net.layer("stem").weight, rtol=1e-6)


def test_run_graph_batches_equal_single_images():
    m = tiny(4)
    low = lower(m, calib=calib(), input_shape=SHAPE)
    x = calib(3, seed=5)
    q = low.quantize_input(x)
    batch = run_graph(low.graph, {"x": q})
    # the conv-only prefix of the graph gives the same integers
    prefix = Graph(inputs=["x"], outputs=["block.conv2"])
    for name in ("x", "stem", "block.conv1", "block.conv2"):
        prefix.add_tensor(low.graph.tensors[name])
    for op in low.graph.ops[:3]:
        prefix.add_op(op)
    for i in range(len(x)):
        one = run_graph(low.graph, {"x": q[i]})
        ref = run_graph(prefix, {"x": q[i]})
        for name in low.graph.tensors:
            np.testing.assert_array_equal(one[name], batch[name][i])
        for name in ("stem", "block.conv1", "block.conv2"):
            np.testing.assert_array_equal(ref[name], one[name])


def test_pool_golden_models():
    rng = np.random.default_rng(0)
    x = rng.integers(-128, 128, (2, 3, 7, 6))
    mp = MaxPool2d("mp", "a", "b", kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1))
    ref = F.max_pool2d(torch.from_numpy(x).double(), 3, 2, padding=1).numpy()
    np.testing.assert_array_equal(mp.run(x), ref)
    sp = SumPool2d("sp", "a", "b", kernel=(7, 6), stride=(1, 1), shift=3)
    s = x.sum(axis=(2, 3), keepdims=True)
    np.testing.assert_array_equal(sp.run(x), np.clip((s + 4) >> 3, -128, 127))
    assert sp.run(np.full((1, 1, 7, 6), 127)).item() == 127      # saturates: 42*127 >> 3


def test_gptq_rounding_beats_independent_rounding():
    m = tiny(9)
    cal = calib(16)
    errs = []
    for gptq in (True, False):
        low = lower(m, calib=cal, input_shape=SHAPE, gptq=gptq, bias_correction=False)
        g = low.graph
        x = low.quantize_input(cal)
        env = run_graph(g, {"x": x})
        op = g.ops[1]                                   # block.conv1, on the stem's output
        xin = env[op.input] * 2.0 ** -g.tensors[op.input].frac
        acc_frac = g.tensors[op.input].frac + op.w_frac
        q = F.conv2d(torch.from_numpy(xin), torch.from_numpy(
            nx.decode_shift(op.weight, 4) * np.exp2(-acc_frac + g.tensors[op.input].frac)
            [:, None, None, None]), padding=1).numpy()
        f = F.conv2d(torch.from_numpy(xin), torch.from_numpy(low.net.layer(op.name).weight),
                     padding=1).numpy()
        errs.append(float(np.mean((q - f) ** 2)))
    assert errs[0] < 0.7 * errs[1], errs


def test_gptq_long_reductions_round_in_channel_blocks():
    """A reduction longer than ``_GPTQ_MAX_COLS`` (here 128 channels x 3x3 = 1152) is factored
    in balanced diagonal blocks of whole input channels; on held-out correlated inputs its
    output error stays well below independent rounding's."""
    from shiftbook.sw.frontend import gptq

    rng = np.random.default_rng(0)
    c, o = 128, 32
    mix = rng.standard_normal((c, c)) * 0.3 + np.eye(c)
    gain = rng.random((1, c, 1, 1))

    def draw() -> np.ndarray:
        z = F.avg_pool2d(torch.from_numpy(rng.standard_normal((8, c, 12, 12))), 3, 1, 1)
        return np.maximum(np.einsum("dc,nchw->ndhw", mix, z.numpy()), 0) * gain

    x, x_test = draw(), draw()
    w = rng.standard_normal((o, c, 3, 3)) * 0.05
    blocks, perm, dead = gptq.gptq_factor(x, (3, 3), (1, 1), (1, 1, 1, 1))
    assert [(b0, b1) for b0, b1, _ in blocks] == [(0, 576), (576, 1152)]
    assert sorted(perm[:576] // 9) == sorted(np.repeat(np.arange(64), 9))  # whole channels
    assert not dead.any()
    _, wf = nx.float_to_shift(w, 4, rounding="log", axis=0)
    wf = np.asarray(wf).reshape(-1)
    plain, _ = nx.float_to_shift(w, 4, rounding="log", w_frac=wf.reshape(-1, 1, 1, 1))
    codes = gptq.gptq_round(w, wf, (blocks, perm, dead), 4, "log")

    def err(cd: np.ndarray) -> float:
        q = nx.decode_shift(np.asarray(cd), 4) * np.exp2(-wf).reshape(-1, 1, 1, 1)
        xt = torch.from_numpy(x_test)
        return float(((F.conv2d(xt, torch.from_numpy(q), padding=1)
                       - F.conv2d(xt, torch.from_numpy(w), padding=1)) ** 2).mean())

    assert err(codes) < 0.75 * err(plain), (err(codes), err(plain))     # measured 0.66


class Odd(nn.Module):
    """A ReLU on the input and adds that no convolution can absorb."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(x)
        a = self.conv(y)
        b = a + y
        return b + a


def test_identity_convolutions_for_unfusable_relu_and_add():
    m = Odd().eval()
    with torch.no_grad():
        m.conv.weight.copy_(torch.tensor([[0.5, -0.25], [0.125, 1.0]])[:, :, None, None])
        m.conv.bias.copy_(torch.tensor([0.1, -0.2]))
    cal = calib(8)
    low = lower(m, calib=cal, input_shape=SHAPE)
    ops = low.graph.ops
    assert [op.name for op in ops] == ["relu", "conv", "add", "add_1"]
    assert ops[0].relu and ops[0].residual is None
    assert ops[2].input == "conv" and ops[2].residual == "relu"
    assert ops[3].input == "add" and ops[3].residual == "conv"
    for op in (ops[0], ops[2]):                         # identity weights: one power of two
        w = nx.decode_shift(op.weight[:, :, 0, 0], op.exp_bits)
        np.testing.assert_array_equal(w, np.diag(np.diag(w)))
        np.testing.assert_array_equal(np.diag(w), np.exp2(op.w_frac))
    x = calib(4, seed=1)
    ref = m.double()(x.double()).detach().numpy()
    got = low.dequantize("add_1", low.run(x)["add_1"])
    assert np.max(np.abs(got - ref)) < 0.1 * np.max(np.abs(ref))


# ---------------------------------------------------------------- errors
class Sig(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


def test_unsupported_op_is_named_with_its_place(tmp_path):
    with pytest.raises(FrontendError) as e:
        lower(Sig(), input_shape=SHAPE)
    msg = str(e.value)
    assert "\n" not in msg
    assert "aten.sigmoid.default" in msg and "module 'act' (Sigmoid)" in msg
    assert "node 'sigmoid'" in msg
    assert list(tmp_path.iterdir()) == []


class Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 3, groups=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dw(x)


class LoneBN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(2)
        self.conv = nn.Conv2d(2, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.bn(x))


def test_unsupported_shapes_are_refused():
    with pytest.raises(FrontendError, match=r"grouped convolution \(groups=4\).*module 'dw'"):
        lower(Grouped(), input_shape=(4, 8, 8))
    with pytest.raises(FrontendError, match=r"batch_norm.*module 'bn'.*only a batch norm "
                                            r"directly after"):
        lower(LoneBN(), input_shape=SHAPE)


def test_kept_format_that_overflows_names_the_layer():
    m = tiny(5, pow2=True)    # weights up to 2**-1: codes up to 2**15 (kept, detected)
    cfg = CoreConfig(acc_bits=24)
    with pytest.raises(nx.NumericsError, match=r"^layer 'stem' \(node 'conv2d' in module "
                                               r"'stem' \(Conv2d\).*24-bit accumulator"):
        lower(m, calib=calib(), input_shape=SHAPE, config=cfg)
    # post-training conversion lowers the channel scales until the layer fits instead
    low = lower(m, calib=calib(), input_shape=SHAPE, config=cfg, weights="ptq")
    for op in low.graph.ops:
        if isinstance(op, Conv2d):
            w = nx.decode_shift(op.weight, op.exp_bits)
            extra = np.abs(op.bias) + (np.abs(nx.align_residual(-128, op.res_shift))
                                       if op.residual else 0)
            assert np.max(nx.acc_bound(w, extra)) <= (1 << 23) - 1


# ---------------------------------------------------------------- calibration
def test_calibration_rule():
    assert act_frac(127.0) == 0
    assert act_frac(127.01) == -1
    assert act_frac(1.0) == 6          # 64 <= 127 < 128
    assert act_frac(0.99) == 7         # 0.99 * 128 = 126.7
    assert act_frac(1000.0) == -3      # 1000 / 8 = 125
    assert act_frac(0.5, cap=3) == 3
    assert act_frac(0.0, cap=5) == 5
    assert quantize_input(torch.tensor([0.49, -0.5, 0.5, 100.0]), 1).tolist() == [1, -1, 1, 127]


def test_calibrated_fracs_follow_the_rule():
    m = tiny(6)
    cal = calib(12)
    low = lower(m, calib=cal, input_shape=SHAPE)
    g = low.graph
    assert g.tensors["x"].frac == act_frac(float(cal.abs().max()))
    env = run_graph(g, {"x": low.quantize_input(cal)})
    for op in g.ops:
        if not isinstance(op, Conv2d):
            continue
        # the real output before saturation, recomputed here from the op's integers
        x = env[op.input]
        w = nx.decode_shift(op.weight, op.exp_bits).astype(np.float64)
        acc = F.conv2d(F.pad(torch.from_numpy(x).double(), (op.padding[1], op.padding[3],
                                                             op.padding[0], op.padding[2])),
                       torch.from_numpy(w), stride=op.stride).numpy()
        acc = acc + op.bias[None, :, None, None]
        if op.residual:
            acc = acc + nx.align_residual(env[op.residual], op.res_shift[None, :, None, None])
        acc_frac = g.tensors[op.input].frac + op.w_frac
        real = acc * np.exp2(-acc_frac)[None, :, None, None]
        if op.relu:
            real = np.maximum(real, 0)
        want = act_frac(float(np.abs(real).max()), int(acc_frac.min()))
        assert g.tensors[op.output].frac == want, op.name
        assert np.abs(env[op.output]).max() <= 127
        if isinstance(op, Linear):
            assert g.tensors[op.input].shape == (4, 1, 1)


# ---------------------------------------------------------------- .pt2 and IR files
def test_pt2_round_trip_and_ir_save_load(tmp_path):
    m = tiny(7)
    cal = calib()
    path = save_pt2(export_module(m, SHAPE), tmp_path / "tiny.pt2")
    a = lower(path, calib=cal)
    b = lower(m, calib=cal, input_shape=SHAPE)
    a.graph.save(tmp_path, "a")
    b.graph.save(tmp_path, "b")
    assert (tmp_path / "a.npz").read_bytes() == (tmp_path / "b.npz").read_bytes()
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()
    back = Graph.load(tmp_path, "a")
    assert [op.kind for op in back.ops] == [op.kind for op in a.graph.ops]
    x = low_x = a.quantize_input(calib(2, seed=11))
    np.testing.assert_array_equal(run_graph(back, {"x": x})["fc"],
                                  run_graph(a.graph, {"x": low_x})["fc"])
    with pytest.raises(FrontendError, match="does not exist"):
        lower(tmp_path / "missing.pt2")
    # the core-aten (decomposed) graph of the same model lowers to the same IR
    c = lower(export_module(m, SHAPE).run_decompositions(), calib=cal)
    c.graph.save(tmp_path, "c")
    assert (tmp_path / "c.npz").read_bytes() == (tmp_path / "a.npz").read_bytes()


# ---------------------------------------------------------------- compressed formats
def test_compressed_formats_are_kept():
    from shiftbook.sw.compress import CompressedModel
    from shiftbook.sw.compress.core import compressible_layers, shift_format_of

    m = tiny(8)
    with torch.no_grad():
        m.block.bn1.weight[1] = -m.block.bn1.weight[1]        # a negative BN scale
    fmts = {name: shift_format_of(mod.weight, 4) for name, mod in compressible_layers(m)}
    cm = CompressedModel(m, fmts)
    # auto: BN scales are not powers of two, so the convolutions are re-rounded post-training;
    # fc (after a 4x4 average pool: 1/16) keeps its codes
    auto = lower(cm, calib=calib(), input_shape=SHAPE)
    assert {r["name"]: r["weights"] for r in auto.layers if "weights" in r} == {
        "stem": "ptq", "block.conv1": "ptq", "block.conv2": "ptq", "fc": "format"}
    low = lower(cm, calib=calib(), input_shape=SHAPE, weights="keep")
    assert all(r["weights"] == "format" for r in low.layers if "weights" in r)
    c1 = next(op for op in low.graph.ops if op.name == "block.conv1")
    bn = m.block.bn1
    s = (bn.weight / torch.sqrt(bn.running_var + bn.eps)).detach().double().numpy()
    k = np.round(np.log2(np.abs(s))).astype(np.int64)
    fmt = fmts["block.conv1"]
    np.testing.assert_array_equal(c1.w_frac, fmt.w_frac.numpy() - k)
    zero, sign, e = nx.shift_fields(fmt.codes.numpy(), 4)
    z2, s2, e2 = nx.shift_fields(c1.weight, 4)
    np.testing.assert_array_equal(z2, zero)
    np.testing.assert_array_equal(e2, e)
    flip = (s < 0)[:, None, None, None] & (zero == 0)
    np.testing.assert_array_equal(s2, np.where(flip, 1 - sign, sign))
    gain = next(r for r in low.layers if r["name"] == "block.conv1")["gain"]
    assert 2 ** -0.5 <= gain[0] <= gain[1] <= 2 ** 0.5
    assert math.isclose(gain[1], float(np.max(np.abs(s) / np.exp2(k))), rel_tol=1e-3)


def test_compressed_checkpoint_of_a_builtin_resnet(tmp_path):
    from shiftbook.sw.compress import CompressedModel, save_compressed
    from shiftbook.sw.compress.core import compressible_layers, shift_format_of
    from shiftbook.sw.models import build_model

    m = build_model("resnet8", num_classes=10, in_channels=1, seed=0).eval()
    fmts = {name: shift_format_of(mod.weight, 4) for name, mod in compressible_layers(m)}
    cm = CompressedModel(m, fmts, {"model": "resnet8",
                                   "model_args": {"num_classes": 10, "in_channels": 1}})
    save_compressed(tmp_path / "r8.pt", cm)
    low = lower(tmp_path / "r8.pt", calib=torch.randn(2, 1, 32, 32))
    weighted = [r for r in low.layers if "weights" in r]
    assert len(weighted) == len(fmts) and all(r["weights"] == "format" for r in weighted)
    assert {op.name for op in low.graph.ops} >= set(fmts)
    fc = next(op for op in low.graph.ops if op.name == "fc")
    # fc keeps its codes; the pool's 1/64 moved into w_frac (k = -6)
    np.testing.assert_array_equal(fc.w_frac, fmts["fc"].w_frac.numpy() + 6)
    z, s, e = nx.shift_fields(fc.weight[:, :, 0, 0], 4)
    z0, s0, e0 = nx.shift_fields(fmts["fc"].codes.numpy(), 4)
    np.testing.assert_array_equal(np.stack([z, s, e]), np.stack([z0, s0, e0]))
    assert "layer3.0.conv2" in low.summary()


def test_codebook_format_kept_and_reported():
    from shiftbook.sw.compress import CodebookFormat, CompressedModel

    m = tiny(10)
    rng = np.random.default_rng(0)
    book = nx.encode_shift(rng.random((8, 4)) < 0.2, rng.integers(0, 2, (8, 4)),
                           rng.integers(0, 16, (8, 4)), 4)
    fmt = CodebookFormat(8, 4, 4, book, rng.integers(0, 8, (4, 9)), np.full(4, 18),
                         (4, 4, 3, 3))
    cm = CompressedModel(m, {"block.conv1": fmt})
    low = lower(cm, calib=calib(), input_shape=SHAPE)
    rep = {r["name"]: r for r in low.layers}
    assert rep["block.conv1"]["weights"] == "format" and rep["stem"]["weights"] == "ptq"
    assert low.formats == {"block.conv1": fmt}
    op = next(op for op in low.graph.ops if op.name == "block.conv1")
    np.testing.assert_array_equal(op.weight, fmt.codes().numpy())     # all BN scales > 0
    g = rep["block.conv1"]["gain"]
    assert 2 ** -0.5 <= g[0] <= g[1] <= 2 ** 0.5 and g != [1.0, 1.0]
