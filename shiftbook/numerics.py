"""Every integer operation of the accelerator, defined once.

The golden reference (``sw/reference``), the functional simulator (``sim/functional``) and the
gateware blocks' ``model()`` methods call these functions, so a rounding or width rule lives
in exactly one place. Pure numpy (no torch, no Amaranth): works on Python ints and on integer
numpy arrays (use int64). See docs/numerics.md.

Shift code layout (``code_bits = exp_bits + 2``), LSB first::

    [exp_bits-1:0]  exponent e   (value magnitude 2**e)
    [exp_bits]      sign         (1 = negative)
    [exp_bits+1]    zero         (1 = the weight is 0; sign and exponent ignored)

Two-term weights (issue 16) carry a second code per weight, laid out the same way: the weight
is the sum of both codes' values, ``±2**a ±2**b`` (either term may be zero). The hardware runs
each term as a one-term reduction over the same activations (docs/numerics.md).

A layer's real weight is ``value * 2**-w_frac`` and a real activation ``q * 2**-a_frac``;
the accumulator of a dot product is at scale ``2**-(a_frac + w_frac)``.
"""

from __future__ import annotations

import functools

import numpy as np

__all__ = [
    "NumericsError", "ACT_MIN", "ACT_MAX",
    "encode_shift", "decode_shift", "shift_fields", "zero_code",
    "float_to_shift", "shift_product",
    "decode_terms", "two_term_grid", "split_two_term", "round_to_grid",
    "round_shift", "saturate", "requantize", "align_residual",
    "acc_bound", "check_acc_fits", "int_range",
]

ACT_MIN, ACT_MAX = -128, 127


class NumericsError(ValueError):
    """A value that the hardware cannot represent (the message names it)."""


def int_range(bits: int) -> tuple[int, int]:
    return -(1 << (bits - 1)), (1 << (bits - 1)) - 1


# ---------------------------------------------------------------- shift codes
def zero_code(exp_bits: int) -> int:
    return 1 << (exp_bits + 1)


def encode_shift(zero, sign, exp, exp_bits: int):
    """Pack (zero, sign, exponent) fields into codes. Zero codes get sign = exponent = 0."""
    zero = np.asarray(zero, dtype=np.int64)
    sign = np.asarray(sign, dtype=np.int64)
    exp = np.asarray(exp, dtype=np.int64)
    if np.any((exp < 0) | (exp > (1 << exp_bits) - 1)):
        raise NumericsError(f"shift exponent out of [0, {(1 << exp_bits) - 1}]")
    code = np.where(zero != 0, zero_code(exp_bits), (sign != 0) * (1 << exp_bits) + exp)
    return code if code.ndim else int(code)


def shift_fields(code, exp_bits: int):
    """Unpack codes into (zero, sign, exponent) integer arrays."""
    code = np.asarray(code, dtype=np.int64)
    return ((code >> (exp_bits + 1)) & 1, (code >> exp_bits) & 1, code & ((1 << exp_bits) - 1))


def decode_shift(code, exp_bits: int):
    """Integer weight value of each code: 0 or ±2**e."""
    code = np.asarray(code, dtype=np.int64)
    # a code is read from its low exp_bits + 2 bits (the fields): one table lookup each
    val = _decode_table(exp_bits)[code & ((1 << (exp_bits + 2)) - 1)]
    return val if val.ndim else int(val)


@functools.cache
def _decode_table(exp_bits: int) -> np.ndarray:
    """The value of every ``exp_bits + 2``-bit code (zero bit, sign bit, exponent)."""
    zero, sign, exp = shift_fields(np.arange(1 << (exp_bits + 2)), exp_bits)
    mag = np.left_shift(np.int64(1), exp)
    table = np.where(zero != 0, 0, np.where(sign != 0, -mag, mag))
    table.flags.writeable = False
    return table


def decode_terms(code, code2, exp_bits: int):
    """Integer weight values of one-term (``code2`` None) or two-term codes: the sum of the
    terms' values."""
    v = decode_shift(code, exp_bits)
    return v if code2 is None else v + decode_shift(code2, exp_bits)


@functools.cache
def two_term_grid(exp_bits: int) -> np.ndarray:
    """Every integer value ``±2**a ±2**b`` (either term zero allowed), sorted, unique."""
    one = np.unique(_decode_table(exp_bits))
    grid = np.unique((one[:, None] + one[None, :]).reshape(-1))
    grid.flags.writeable = False
    return grid


@functools.cache
def _two_term_split_table(exp_bits: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(grid, first codes, second codes): the canonical split of each grid value. The first
    term is the larger in magnitude; a one-term value keeps a zero second term."""
    table = _decode_table(exp_bits)
    n = len(table)
    c1, c2 = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")
    c1, c2 = c1.reshape(-1), c2.reshape(-1)
    v1, v2 = table[c1], table[c2]
    zc = zero_code(exp_bits)
    # canonical codes only: zero as zero_code, and |v1| >= |v2| (ties: positive first)
    canon = (((v1 != 0) | (c1 == zc)) & ((v2 != 0) | (c2 == zc))
             & ((np.abs(v1) > np.abs(v2)) | ((np.abs(v1) == np.abs(v2)) & (v1 >= v2))))
    c1, c2, val = c1[canon], c2[canon], (v1 + v2)[canon]
    # per value, prefer a zero second term, then the smallest second-term magnitude
    order = np.lexsort((np.abs(v2[canon]), val))
    val, c1, c2 = val[order], c1[order], c2[order]
    first = np.r_[True, val[1:] != val[:-1]]
    out = val[first], c1[first], c2[first]
    for a in out:
        a.flags.writeable = False
    return out


def split_two_term(values, exp_bits: int):
    """Two-term codes ``(code, code2)`` of integer weight values (each on
    :func:`two_term_grid`, else NumericsError); ``decode_terms`` gives the values back."""
    v = np.asarray(values, dtype=np.int64)
    grid, c1, c2 = _two_term_split_table(exp_bits)
    i = np.clip(np.searchsorted(grid, v), 0, len(grid) - 1)
    bad = grid[i] != v
    if np.any(bad):
        raise NumericsError(f"weight value {int(v[bad].reshape(-1)[0])} is not ±2**a ±2**b "
                            f"with exponents in [0, {(1 << exp_bits) - 1}]")
    return c1[i], c2[i]


def round_to_grid(x, grid: np.ndarray):
    """Each value of ``x`` rounded to the nearest value of the sorted ``grid`` (ties to the
    larger magnitude)."""
    x = np.asarray(x, dtype=np.float64)
    i = np.clip(np.searchsorted(grid, x), 1, len(grid) - 1)
    lo, hi = grid[i - 1], grid[i]
    dlo, dhi = x - lo, hi - x
    up = (dhi < dlo) | ((dhi == dlo) & (x > 0))
    return np.where(up, hi, lo).astype(np.int64)


def float_to_shift(w, exp_bits: int, *, rounding: str = "log", w_frac: int | None = None,
                   axis: int | None = None):
    """Round float weights to shift codes with a power-of-two scale.

    ``rounding="log"`` rounds ``log2|w|`` to the nearest integer (DeepShift; the threshold
    between 2**n and 2**(n+1) is 2**(n+0.5)); ``"linear"`` picks the nearest power of two in
    the linear domain (INQ/ShiftCNN; threshold 1.5 * 2**n). Magnitudes below half the smallest
    level (in the chosen domain) become zero. ``w_frac`` (the scale exponent, real weight =
    value * 2**-w_frac) defaults to mapping the largest |w| to the largest exponent; with
    ``axis`` given it is chosen per slice along that axis (per output channel).

    Returns ``(codes, w_frac)``; ``w_frac`` is an int, or an int array along ``axis``.
    """
    if rounding not in ("log", "linear"):
        raise NumericsError(f"unknown rounding {rounding!r} (log or linear)")
    w = np.asarray(w, dtype=np.float64)
    emax = (1 << exp_bits) - 1
    if w_frac is None:
        if axis is None:
            m = float(np.max(np.abs(w))) if w.size else 0.0
            w_frac = emax - int(np.round(np.log2(m))) if m > 0 else 0
            frac = w_frac
        else:
            red = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
            m = np.max(np.abs(w), axis=red)
            safe = np.where(m > 0, m, 1.0)
            w_frac = np.where(m > 0, emax - np.round(np.log2(safe)), 0).astype(np.int64)
            shape = [1] * w.ndim
            shape[axis % w.ndim] = -1
            frac = w_frac.reshape(shape)
    else:
        frac = w_frac
    x = np.abs(w) * np.exp2(frac)
    with np.errstate(divide="ignore"):
        lx = np.log2(np.where(x > 0, x, 1.0))
    if rounding == "log":
        e = np.floor(lx + 0.5)
        is_zero = (x <= 0) | (lx < -0.5)
    else:
        fl = np.floor(lx)
        e = np.where(x >= 1.5 * np.exp2(fl), fl + 1, fl)
        is_zero = (x <= 0) | (x < 0.5)
        e = np.where(x < 1.0, 0, e)  # [0.5, 1) rounds up to 2**0
    e = np.clip(e, 0, emax).astype(np.int64)
    codes = encode_shift(is_zero, w < 0, np.where(is_zero, 0, e), exp_bits)
    return np.asarray(codes, dtype=np.int64), w_frac


def shift_product(x, code, exp_bits: int):
    """What a shift PE adds to its accumulator: ±(x << e), or 0."""
    zero, sign, exp = shift_fields(code, exp_bits)
    x = np.asarray(x, dtype=np.int64)
    p = np.left_shift(x, exp)
    out = np.where(zero != 0, 0, np.where(sign != 0, -p, p))
    return out if out.ndim else int(out)


# ---------------------------------------------------------------- requantization
def round_shift(v, s):
    """Arithmetic shift right by ``s`` with round-half-up (``s > 0``); ``s <= 0`` shifts left.

    ``(v + 2**(s-1)) >> s``: ties go towards +inf, for negative values too.
    """
    v = np.asarray(v, dtype=np.int64)
    s = np.asarray(s, dtype=np.int64)
    if s.size and v.size:
        # One direction for every element (the usual case: per-channel shifts of one sign):
        # the same arithmetic with two temporaries instead of six.
        if int(s.min()) > 0:
            out = np.right_shift(v + np.left_shift(np.int64(1), s - 1), s)
            return out if out.ndim else int(out)
        if int(s.max()) <= 0:
            out = np.left_shift(v, -s)
            return out if out.ndim else int(out)
    sp = np.maximum(s, 0)
    half = np.where(sp > 0, np.left_shift(np.int64(1), np.maximum(sp - 1, 0)), 0)
    right = np.right_shift(v + half, sp)
    left = np.left_shift(v, np.maximum(-s, 0))
    out = np.where(s > 0, right, left)
    return out if out.ndim else int(out)


def saturate(v, bits: int = 8):
    lo, hi = int_range(bits)
    out = np.clip(np.asarray(v, dtype=np.int64), lo, hi)
    return out if out.ndim else int(out)


def align_residual(r, res_shift):
    """Bring an int8 residual operand to accumulator scale: ``r << s`` (s >= 0) or a
    round-half-up right shift by ``-s`` (s < 0)."""
    return round_shift(r, -np.asarray(res_shift, dtype=np.int64))


def requantize(acc, bias, shift, *, relu: bool = False, residual=None, res_shift=0,
               out_bits: int = 8):
    """Accumulator -> int8: ``sat(relu(round_shift(acc + bias [+ align(res)], shift)))``.

    Arithmetic is exact (the compiler has proven ``acc`` fits the accumulator; the sums here
    are carried two bits wider in hardware). ``shift`` and ``bias`` broadcast per channel.
    """
    v = np.asarray(acc, dtype=np.int64) + np.asarray(bias, dtype=np.int64)
    if residual is not None:
        v = v + align_residual(residual, res_shift)
    v = round_shift(v, shift)
    if relu:
        v = np.maximum(v, 0)
    return saturate(v, out_bits)


# ---------------------------------------------------------------- accumulator bounds
def acc_bound(w_int, bias=None, *, act_bits: int = 8, axis: int = 0):
    """Worst-case |accumulator| per output channel (``axis`` of ``w_int``) over all inputs in
    the activation range, bias included."""
    w = np.abs(np.asarray(w_int, dtype=np.int64))
    red = tuple(i for i in range(w.ndim) if i != axis)
    bound = (1 << (act_bits - 1)) * (w.sum(axis=red) if red else w)
    if bias is not None:
        bound = bound + np.abs(np.asarray(bias, dtype=np.int64))
    return bound


def check_acc_fits(w_int, bias, *, acc_bits: int, act_bits: int = 8, axis: int = 0,
                   what: str = "layer") -> None:
    """Refuse a layer whose worst-case dot product could overflow the accumulator."""
    bound = acc_bound(w_int, bias, act_bits=act_bits, axis=axis)
    limit = (1 << (acc_bits - 1)) - 1
    worst = int(np.max(bound)) if np.size(bound) else 0
    if worst > limit:
        ch = int(np.argmax(bound))
        raise NumericsError(
            f"{what}: worst-case accumulator |sum| {worst} in output channel {ch} exceeds "
            f"the {acc_bits}-bit accumulator ({limit}); lower the weight exponents or "
            f"widen acc_bits")
