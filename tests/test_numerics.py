"""sw/numerics: the integer rules, exhaustively at small widths."""

import numpy as np
import pytest

from shiftbook import numerics as nm


@pytest.mark.parametrize("exp_bits", [1, 2, 3, 4])
def test_shift_code_round_trip_exhaustive(exp_bits):
    codes = np.arange(1 << (exp_bits + 2))
    zero, sign, exp = nm.shift_fields(codes, exp_bits)
    vals = nm.decode_shift(codes, exp_bits)
    for c, z, s, e, v in zip(codes, zero, sign, exp, vals, strict=True):
        expect = 0 if z else (-1 if s else 1) * 2 ** int(e)
        assert v == expect, c
    canon = nm.encode_shift(zero, sign, exp, exp_bits)
    assert np.array_equal(nm.decode_shift(canon, exp_bits), vals)


def test_shift_product_exhaustive_int8():
    eb = 2
    x = np.arange(-128, 128)[:, None]
    codes = np.arange(1 << (eb + 2))[None, :]
    assert np.array_equal(nm.shift_product(x, codes, eb), x * nm.decode_shift(codes, eb))


def test_round_shift_is_round_half_up():
    v = np.arange(-1000, 1001)
    for s in range(0, 9):
        expect = np.floor(v / 2.0 ** s + 0.5).astype(np.int64)
        assert np.array_equal(nm.round_shift(v, s), expect), s
    assert nm.round_shift(3, -2) == 12


def test_requantize_exhaustive_small():
    acc = np.arange(-3000, 3000)
    for shift in (0, 1, 4, 7):
        for relu in (False, True):
            got = nm.requantize(acc, 5, shift, relu=relu)
            ref = np.floor((acc + 5) / 2.0 ** shift + 0.5)
            if relu:
                ref = np.maximum(ref, 0)
            assert np.array_equal(got, np.clip(ref, -128, 127)), (shift, relu)


def test_requantize_residual_alignment():
    r = np.arange(-128, 128)
    assert np.array_equal(nm.requantize(0, 0, 0, residual=r, res_shift=2, out_bits=16), r * 4)
    got = nm.requantize(0, 0, 0, residual=r, res_shift=-1)
    assert np.array_equal(got, np.floor(r / 2 + 0.5))


@pytest.mark.parametrize("rounding", ["log", "linear"])
def test_float_to_shift_levels(rounding):
    eb = 3
    w = np.array([1.0, 0.5, -0.25, 0.7, 0.74, 0.76, 0.0, 1e-6])
    codes, frac = nm.float_to_shift(w, eb, rounding=rounding)
    assert frac == 7  # max |w| = 1 maps to 2**7
    vals = nm.decode_shift(codes, eb) * 2.0 ** -frac
    assert list(vals[:3]) == [1.0, 0.5, -0.25]
    assert vals[6] == 0 and vals[7] == 0
    # 0.7: log2 = -0.515 -> 2**-1 (log); linear threshold 0.75 -> 0.5 as well
    assert vals[3] == 0.5
    # 0.74 vs 0.76: linear threshold 0.75; log threshold 2**-0.5 = 0.7071
    assert vals[4] == (1.0 if rounding == "log" else 0.5)
    assert vals[5] == 1.0


def test_float_to_shift_per_channel():
    w = np.array([[1.0, 0.5], [0.01, -0.02]])
    codes, frac = nm.float_to_shift(w, 3, axis=0)
    assert list(frac) == [7, 13]
    got = nm.decode_shift(codes, 3) * 2.0 ** -frac[:, None]
    assert np.allclose(got, [[1, .5], [2**-7, -2**-6]])


def test_acc_bound_and_refusal():
    w = np.array([[4, -4, 0], [1, 1, 1]])
    assert list(nm.acc_bound(w, [10, 0])) == [128 * 8 + 10, 128 * 3]
    nm.check_acc_fits(w, None, acc_bits=12)
    with pytest.raises(nm.NumericsError, match="conv7: .* output channel 0"):
        nm.check_acc_fits(w, None, acc_bits=11, what="conv7")
