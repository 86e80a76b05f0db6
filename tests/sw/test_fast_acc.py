"""The quantizer's fast paths equal the rules they replace: float32 exponent-plane
accumulators (sw/frontend/fast_acc.py) against ``reference.conv_acc``, the compiled GPTQ
rounding loop against its numpy form, the GPTQ calibration rows against ``F.unfold``, bias
correction's mean windows against a float64 convolution, and the fused requantization
(sw/frontend/fast_requant.py) against ``numerics.requantize``."""

import numpy as np
import pytest

from shiftbook import numerics as nx
from shiftbook.sw.frontend import gptq
from shiftbook.sw.frontend.fast_acc import EXACT_F32, shift_conv_acc
from shiftbook.sw.ir import Conv2d
from shiftbook.sw.reference import conv_acc


def _codes(rng, shape, e_lo, e_hi, p_zero, exp_bits=4):
    zero = (rng.random(shape) < p_zero).astype(np.int64)
    sign = rng.integers(0, 2, shape)
    e = rng.integers(e_lo, e_hi + 1, shape)
    return np.asarray(nx.encode_shift(zero, sign, np.where(zero != 0, 0, e), exp_bits),
                      np.int64)


@pytest.mark.parametrize("case", [
    # (C, O, kernel, stride, padding, exponent range, zero fraction, input)
    (64, 32, 3, 1, 1, (0, 15), 0.1, "random"),
    (256, 16, 3, 1, 1, (12, 15), 0.0, "min"),      # every product at the top: many chunks
    (3, 8, 7, 2, 3, (0, 15), 0.3, "random"),
    (128, 24, 1, 2, 0, (0, 7), 0.5, "max"),        # one plane only
    (32, 8, 3, 1, 1, (0, 15), 1.0, "random"),      # no live weight
    (512, 8, 3, 1, 1, (15, 15), 0.0, "min"),       # five chunks of one plane
    (1600, 4, 3, 1, 1, (15, 15), 0.0, "min"),      # 13 chunks: falls back to float64
])
def test_shift_conv_acc_equals_golden(case):
    c, o, k, s, p, (e_lo, e_hi), pz, inp = case
    rng = np.random.default_rng(c * 7 + o)
    codes = _codes(rng, (o, c, k, k), e_lo, e_hi, pz)
    x = rng.integers(-128, 128, (3, c, 9, 11))
    if inp == "min":
        x[:] = -128
    elif inp == "max":
        x[:] = 127
    op = Conv2d("c", "a", "b", weight=codes, exp_bits=4, stride=(s, s), padding=(p, p, p, p))
    want = conv_acc(x, op)
    got = shift_conv_acc(x.astype(np.int8), op)
    assert got.dtype == np.int64 and np.array_equal(got, want)
    if inp == "min" and e_lo == 12:
        assert np.abs(want).max() > 8 * EXACT_F32     # the bound really needed the planes


@pytest.mark.parametrize("rounding", ["log", "linear"])
def test_compiled_gptq_loop_equals_numpy_loop(rounding):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 160, 6, 6))        # 1440 columns: two diagonal blocks
    w = rng.standard_normal((24, 160, 3, 3)) * 0.05
    factor = gptq.gptq_factor(x, (3, 3), (1, 1), (1, 1, 1, 1))
    assert len(factor[0]) == 2
    wf = rng.integers(8, 14, 24)
    a = gptq.gptq_round(w, wf, factor, 4, rounding, compiled=True)
    b = gptq.gptq_round(w, wf, factor, 4, rounding, compiled=False)
    assert np.array_equal(a, b)


@pytest.mark.parametrize("n,c,h,k,s,pad", [
    (3, 4, 9, 3, 1, (1, 1, 1, 1)), (2, 5, 8, 3, 2, (1, 0, 1, 1)), (4, 3, 7, 1, 2, (0, 0, 0, 0)),
    (2, 6, 1, 1, 1, (0, 0, 0, 0)), (2, 3, 12, 7, 2, (3, 3, 3, 2))])
def test_mean_window_gives_the_mean_conv_output(n, c, h, k, s, pad):
    """Bias correction's mean error without a convolution: the weights contracted with the
    mean input window equal the float64 convolution's per-channel mean (padding: top, left,
    bottom, right, asymmetric included)."""
    import torch
    import torch.nn.functional as F

    from shiftbook.sw.frontend.quantize import mean_window

    rng = np.random.default_rng(n * 100 + h)
    x = rng.integers(-128, 128, (n, c, h, h)).astype(np.int8)
    w = rng.normal(size=(5, c, k, k))
    t, left, b, r = pad
    conv = F.conv2d(F.pad(torch.from_numpy(x.astype(np.float64)), (left, r, t, b)),
                    torch.from_numpy(w), stride=s).numpy().mean(axis=(0, 2, 3))
    got = w.reshape(5, -1) @ mean_window(x, (k, k), (s, s), pad).reshape(-1)
    np.testing.assert_allclose(got, conv, rtol=1e-12, atol=1e-12 * np.abs(conv).max())


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("with_res", [False, True])
def test_fused_requantization_equals_the_golden_rule(relu, with_res):
    """requantize_fused equals numerics.requantize element for element, and acc_extremes /
    saturated_fraction equal the numpy statistics the output calibration used, on
    accumulators near the 32-bit limits, shifts of both signs (zero included) and residual
    alignments of both signs."""
    from shiftbook.sw.frontend.fast_requant import (
        acc_extremes,
        requantize_fused,
        saturated_fraction,
    )

    rng = np.random.default_rng(7 + relu + 2 * with_res)
    n, o, h = 3, 9, 5
    raw = rng.integers(-(1 << 31), 1 << 31, (n, o, h, h)).astype(np.int64)
    raw[0, 0, 0, :] = [-(1 << 31), (1 << 31) - 1, 0, 1, -1]
    raw[1] //= 1 << rng.integers(0, 30, (o, 1, 1))       # small values too
    bias = rng.integers(-(1 << 20), 1 << 20, o)
    shift = np.array([-3, -1, 0, 1, 2, 7, 15, 24, 31])
    res = rng.integers(-128, 128, (n, o, h, h)).astype(np.int8) if with_res else None
    rs = np.array([-7, -2, -1, 0, 0, 1, 3, 8, 20]) if with_res else None
    shp = (1, o, 1, 1)
    want = nx.requantize(raw, bias.reshape(shp), shift.reshape(shp), relu=relu, residual=res,
                         res_shift=0 if rs is None else rs.reshape(shp))
    got = requantize_fused(raw, bias, shift, relu=relu, residual=res, res_shift=rs)
    assert got.dtype == np.int8
    np.testing.assert_array_equal(got, want)
    acc = raw + bias.reshape(shp)
    if with_res:
        acc = acc + nx.align_residual(res, rs.reshape(shp))
    hi, lo = acc_extremes(raw, bias, res, rs)
    np.testing.assert_array_equal(hi, acc.max(axis=(0, 2, 3)))
    np.testing.assert_array_equal(lo, acc.min(axis=(0, 2, 3)))
    scale = np.exp2(-np.arange(o, dtype=np.float64) - 20)
    real = acc * scale.reshape(shp)
    if relu:
        real = np.maximum(real, 0.0)
    assert saturated_fraction(raw, bias, scale, relu=relu, residual=res, res_shift=rs) == \
        float(np.mean(np.abs(real) > 127.5))


@pytest.mark.parametrize("n,c,h,k,s,pad", [
    (3, 5, 9, 3, 2, (1, 0, 1, 1)), (4, 3, 32, 7, 2, (3, 3, 3, 2)), (2, 7, 8, 1, 2, (0, 0, 0, 0)),
    (40, 2, 30, 3, 1, (1, 1, 1, 1))])       # the last one has more windows than are picked
def test_gptq_input_rows_are_unfold_rows(n, c, h, k, s, pad):
    """The GPTQ calibration rows equal F.unfold's patches (channel-major, kernel rows, then
    columns) at the picked windows, value for value, from a real or an integer input."""
    import torch
    import torch.nn.functional as F

    x = np.random.default_rng(h).integers(-128, 128, (n, c, h, h)) * 0.25
    t, left, b, r = pad
    cols = F.unfold(F.pad(torch.from_numpy(x.astype(np.float32)), (left, r, t, b)), k,
                    stride=s)                                       # (N, C*K*K, L)
    every = cols.transpose(1, 2).reshape(-1, c * k * k).numpy()
    pick = np.arange(len(every))
    if len(every) > gptq._GPTQ_ROWS:
        pick = np.sort(np.random.default_rng(0).choice(len(every), gptq._GPTQ_ROWS,
                                                       replace=False))
    np.testing.assert_array_equal(gptq._input_rows(x, (k, k), (s, s), pad), every[pick])
    # integer input and its scale (the quantizer's int8 calibration tensors): the same rows
    xi = (x * 4).astype(np.int8)
    np.testing.assert_array_equal(gptq._input_rows(xi, (k, k), (s, s), pad, 0.25), every[pick])
