"""Golden reference: exact integer convolution, float agreement within the scale error, and
the random layer generator's extreme cases."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import pytest

from shiftbook import numerics as nx
from shiftbook.sw.ir import Conv2d, IRError, Op, TensorSpec, register_op
from shiftbook.sw.reference import conv_acc, float_conv, random_layer, run_graph


def _direct_acc(x: np.ndarray, op: Conv2d) -> np.ndarray:
    """Independent accumulator: explicit loops over the padded input with shift products."""
    c, h, w = x.shape
    t, left, b, r = op.padding
    xp = np.zeros((c, h + t + b, w + left + r), np.int64)
    xp[:, t:t + h, left:left + w] = x
    o = op.out_channels
    kh, kw = op.kernel
    sy, sx = op.stride
    oh, ow = op.out_hw((h, w))
    acc = np.zeros((o, oh, ow), np.int64)
    for oy in range(oh):
        for ox in range(ow):
            win = xp[:, oy * sy: oy * sy + kh, ox * sx: ox * sx + kw]
            for oc in range(o):
                acc[oc, oy, ox] = int(np.sum(nx.shift_product(win, op.weight[oc], op.exp_bits)))
    return acc


@pytest.mark.parametrize("kernel, stride, padding", [(1, 1, 0), (3, 1, 1), (3, 2, 0), (5, 2, 2)])
def test_conv_acc_matches_direct_loops(kernel, stride, padding):
    layer = random_layer("conv", 5, 6, kernel, stride, padding, 9, seed=kernel + stride,
                         input_dist="uniform")
    x = layer.inputs["x"]
    assert np.array_equal(conv_acc(x, layer.op), _direct_acc(x, layer.op))


def test_asymmetric_padding():
    layer = random_layer("conv", 3, 4, 3, 1, 0, 7, seed=5)
    op = layer.op
    op.padding = (0, 2, 1, 0)
    x = layer.inputs["x"]
    assert np.array_equal(conv_acc(x, op), _direct_acc(x, op))


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("op_kind", ["conv", "linear"])
def test_golden_agrees_with_float_within_half_an_output_step(seed, op_kind):
    layer = random_layer(op_kind, 12, 10, 3, 1 + seed % 2, None, 8, seed=seed, relu=seed % 2 == 0)
    g, op = layer.graph, layer.op
    out = run_graph(g, layer.inputs)["y"]
    xs, ys = g.tensors["x"], g.tensors["y"]
    # Float model with the quantized (dequantized) weights and bias.
    wq = nx.decode_shift(op.weight, op.exp_bits) * np.exp2(-op.w_frac)[:, None, None, None]
    bq = op.bias * np.exp2(-(xs.frac + op.w_frac))
    ref = float_conv(layer.inputs["x"] * 2.0**-xs.frac, wq, bq, op.stride, op.padding)
    if op.relu:
        ref = np.maximum(ref, 0)
    step = 2.0**-ys.frac
    inside = (ref < 127 * step) & (ref > -128 * step)
    err = np.abs(out * step - ref)
    assert np.all(err[inside] <= step / 2 + 1e-12)
    assert np.all(out[~inside] == np.where(ref[~inside] > 0, 127, -128))
    assert inside.mean() > 0.9  # calibration keeps almost everything in range


def test_quantized_layer_tracks_the_float_layer():
    layer = random_layer("conv", 16, 8, 3, 1, None, 10, seed=11, relu=False)
    op = layer.op
    out = run_graph(layer.graph, layer.inputs)["y"] * 2.0**-layer.graph.tensors["y"].frac
    wq = nx.decode_shift(op.weight, op.exp_bits) * np.exp2(-op.w_frac)[:, None, None, None]
    x = layer.inputs["x"] * 2.0**-layer.graph.tensors["x"].frac
    ref = float_conv(x, wq, None, op.stride, op.padding)
    assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.98


def test_zero_weights_give_requantized_bias():
    layer = random_layer("conv", 4, 6, 3, seed=2, weights_dist="zero", relu=False)
    op = layer.op
    out = run_graph(layer.graph, layer.inputs)["y"]
    expect = nx.requantize(np.zeros(6, np.int64), op.bias, op.shift)
    assert np.array_equal(out, np.broadcast_to(expect[:, None, None], out.shape))


def test_extreme_weights_saturate_and_fit_the_accumulator():
    layer = random_layer("conv", 40, 8, 3, seed=4, weights_dist="extreme", input_dist="extreme")
    op = layer.op
    out = run_graph(layer.graph, layer.inputs)["y"]
    assert (np.mean(np.abs(out) >= 127)) > 0.5
    nx.check_acc_fits(nx.decode_shift(op.weight, op.exp_bits), op.bias, acc_bits=32)
    # The largest exponent that still fits: one more would overflow 32 bits.
    e = int(np.max(op.weight & 15))
    assert 128 * op.weight[0].size * 2 ** (e + 1) > 2**31 - 1 or e == 15


def test_random_layer_is_seeded():
    a = random_layer("conv", 3, 5, seed=7)
    b = random_layer("conv", 3, 5, seed=7)
    c = random_layer("conv", 3, 5, seed=8)
    assert np.array_equal(a.op.weight, b.op.weight)
    assert np.array_equal(a.inputs["x"], b.inputs["x"])
    assert not np.array_equal(a.inputs["x"], c.inputs["x"])


@pytest.mark.parametrize("kw, msg", [
    (dict(op="pool"), "unknown op"), (dict(size=0), "size"), (dict(kernel=9, size=2, padding=0),
                                                             "larger than the padded"),
    (dict(weights_dist="gauss"), "unknown weight distribution"),
    (dict(input_dist="gauss"), "unknown input distribution"),
])
def test_random_layer_rejects_bad_input(kw, msg):
    with pytest.raises(IRError, match=msg):
        random_layer(**kw)


def test_other_op_kinds_run_through_their_run_method():
    @register_op
    @dataclass
    class Negate(Op):
        kind: ClassVar[str] = "test_negate"

        def run(self, x):
            return nx.saturate(-x)

    layer = random_layer("conv", 2, 3, 1, seed=0, input_dist="extreme")
    g = layer.graph
    g.add_tensor(TensorSpec("z", g.tensors["y"].shape, 0))
    g.add_op(Negate("neg", "y", "z"))
    g.outputs = ["z"]
    env = run_graph(g, layer.inputs)
    assert np.array_equal(env["z"], np.clip(-env["y"], -128, 127))


def test_run_graph_batches_equal_single_images():
    """One golden executor for one image ``(C, H, W)`` and a batch ``(N, C, H, W)``: every
    tensor of the batch equals the single-image run; ``conv_acc`` likewise."""
    layer = random_layer("conv", 4, 6, 3, 2, None, 9, seed=3, residual=False)
    other = random_layer("conv", 4, 6, 3, 2, None, 9, seed=4).inputs["x"]
    xs = np.stack([layer.inputs["x"], other])
    batch = run_graph(layer.graph, {"x": xs})
    for i in range(2):
        one = run_graph(layer.graph, {"x": xs[i]})
        assert one.keys() == batch.keys()
        for name, v in one.items():
            assert v.dtype == np.int64 and np.array_equal(batch[name][i], v)
        assert np.array_equal(conv_acc(xs, layer.op)[i], conv_acc(xs[i], layer.op))


@pytest.mark.parametrize("x, msg", [
    (np.zeros((4, 9)), r"shape \(4, 9\), expected \(4, 9, 9\) or \(N, \*\(4, 9, 9\)\)"),
    (np.zeros((2, 4, 9, 8)), "expected"),
    (np.full((1, 4, 9, 9), 200), "outside int8"),
])
def test_run_graph_rejects_bad_inputs(x, msg):
    layer = random_layer("conv", 4, 6, 3, 1, None, 9, seed=3)
    with pytest.raises(IRError, match=msg):
        run_graph(layer.graph, {"x": x})
    with pytest.raises(IRError, match="missing value for graph input 'x'"):
        run_graph(layer.graph, {})
