"""Exact integer convolution accumulators from float32 convolutions (the quantizer's hot path).

``sw.reference.conv_acc`` (the golden rule) convolves in float64, exact because every partial
sum stays below 2**53. A float32 convolution runs about 7x faster here (oneDNN's direct
algorithm against a float64 im2col), and it is exact too when every partial sum is an integer
of magnitude at most 2**24: products of int8 activations and powers of two are exact, and a
sum of exact integers stays exact, in any order, while no partial sum exceeds 2**24.
The partial results are combined in int64 by a compiled pass (``_combine``).

:func:`shift_conv_acc` makes that so by construction:

- the shift weights ``+-2**e`` are split into *exponent planes* of ``PLANE_BITS`` exponents
  (plane ``p`` holds the weights with ``e`` in ``[p*PLANE_BITS, (p+1)*PLANE_BITS)``, scaled
  by ``2**-(p*PLANE_BITS)``), so one plane's weights are below ``2**PLANE_BITS``;
- each plane's input channels are cut into chunks whose bound (for every output channel, the
  sum over the chunk's weights of ``|w| * max|x of that input channel|``) is at most
  ``2**24``; every chunk is one float32 convolution, its integer result added in int64.

The cost is one float32 convolution per non-empty plane (chunks split the reduction, not the
work). When that would cost more than the float64 convolution (many planes, or chunks of one
channel), it falls back to ``conv_acc``. The result equals ``conv_acc`` element for element
(tests/test_fast_acc.py checks it on extreme codes and inputs).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
import torch.nn.functional as F

from shiftbook import numerics as nx
from shiftbook.sw.ir import Conv2d
from shiftbook.sw.reference import conv_acc

__all__ = ["shift_conv_acc", "PLANE_BITS", "EXACT_F32"]

PLANE_BITS = 8          # exponents per plane: plane weights are below 2**8
EXACT_F32 = 2.0**24     # every integer of magnitude <= 2**24 is a float32
_MAX_CONVS = 12         # float32 convolutions worth one float64 one (7x slower), with margin


def _chunks(s: np.ndarray, amax: np.ndarray) -> list[tuple[int, int]] | None:
    """Input-channel ranges whose bound ``max_o sum_c s[o, c] * amax[c]`` is at most
    ``EXACT_F32`` (``s[o, c]``: the sum of ``|w|`` of output ``o`` over input channel ``c``'s
    kernel), greedily; None if one channel alone exceeds it."""
    per = s * amax[None, :]
    out: list[tuple[int, int]] = []
    c0, acc = 0, np.zeros(s.shape[0])
    for c in range(s.shape[1]):
        col = per[:, c]
        if float(col.max()) > EXACT_F32:
            return None
        if float((acc + col).max()) > EXACT_F32:
            out.append((c0, c))
            c0, acc = c, col.copy()
        else:
            acc += col
    out.append((c0, s.shape[1]))
    return out


def shift_conv_acc(x: np.ndarray, op: Conv2d) -> np.ndarray:
    """``conv_acc(x, op)`` (int64 ``(N, O, OH, OW)`` for int ``x`` ``(N, C, H, W)``), computed
    with exact float32 convolutions where the bounds allow (module docstring)."""
    xa = np.asarray(x)
    if xa.ndim != 4 or xa.size == 0:
        return conv_acc(x, op)
    codes = np.asarray(op.weight)
    if codes.ndim == 2:                 # a Linear: (O, I) as a 1x1 convolution
        codes = codes[:, :, None, None]
    zero, sign, e = nx.shift_fields(codes, op.exp_bits)
    live = zero == 0
    amax = np.abs(xa).max(axis=(0, 2, 3)).astype(np.float64)
    if float(amax.max()) >= EXACT_F32:
        return conv_acc(x, op)
    plans = []
    for lo in range(0, (1 << op.exp_bits), PLANE_BITS):
        in_plane = live & (e >= lo) & (e < lo + PLANE_BITS)
        if not in_plane.any():
            continue
        wp = np.where(in_plane, np.where(sign != 0, -1.0, 1.0) * np.exp2(e - lo), 0.0)
        chunks = _chunks(np.abs(wp).sum(axis=(2, 3)), amax)
        if chunks is None:
            return conv_acc(x, op)
        plans.append((lo, wp, chunks))
    if sum(len(c) for _, _, c in plans) > _MAX_CONVS:
        return conv_acc(x, op)
    t, left, b, r = op.padding
    xt = F.pad(torch.from_numpy(xa.astype(np.float32)), (left, r, t, b))
    parts: list[tuple[np.ndarray, int]] = []
    for lo, wpl, chunks in plans:
        wt = torch.from_numpy(wpl.astype(np.float32))
        for c0, c1 in chunks:
            if not np.any(wpl[:, c0:c1]):
                continue
            y = F.conv2d(xt[:, c0:c1], wt[:, c0:c1], stride=op.stride)  # exact, <= 2**24
            parts.append((y.numpy(), 1 << lo))
    if not parts:
        return conv_acc(x, op)      # no live weight: the golden path gives the zero shape
    return _combine(parts)


def _combine(parts: list[tuple[np.ndarray, int]]) -> np.ndarray:
    """``sum(int64(y) * scale)`` over the float32 partial results (exact integers), in one
    pass for two parts and one more pass per further part, without float64 temporaries."""
    shape = parts[0][0].shape
    flat = [(np.ascontiguousarray(y).reshape(-1), np.int64(sc)) for y, sc in parts]
    out = np.empty(flat[0][0].size, np.int64)
    if len(flat) >= 2:
        _sum2(flat[0][0], flat[0][1], flat[1][0], flat[1][1], out)
        rest = flat[2:]
    else:
        _sum2(flat[0][0], flat[0][1], flat[0][0], np.int64(0), out)
        rest = []
    for y, sc in rest:
        _add(y, sc, out)
    return out.reshape(shape)


@numba.njit(cache=True)
def _sum2(a: np.ndarray, sa: np.int64, b: np.ndarray, sb: np.int64, out: np.ndarray) -> None:
    for i in range(out.size):
        out[i] = np.int64(a[i]) * sa + np.int64(b[i]) * sb


@numba.njit(cache=True)
def _add(a: np.ndarray, sa: np.int64, out: np.ndarray) -> None:
    for i in range(out.size):
        out[i] += np.int64(a[i]) * sa
