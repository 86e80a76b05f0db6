"""The quantizer's fast paths equal the golden ones exactly: float32 exponent-plane
accumulators (sw/frontend/fast_acc.py) against ``reference.conv_acc``, and the compiled GPTQ
rounding loop against its numpy form."""

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
