"""Fused requantization of calibration accumulators (the quantizer's output calibration).

``numerics.requantize`` (the golden rule) builds the int8 output of a layer in several int64
passes over ``(N, O, H, W)`` (bias, aligned residual, round-half-up shift, ReLU, saturation),
each allocating a temporary; on ResNet-50's 32 calibration images that is 9 of the quantizer's
48 seconds. The kernels here do the same integer arithmetic in one compiled pass per result:

- :func:`acc_extremes`: per output channel the largest and smallest ``acc + bias [+ aligned
  residual]``, from which the output calibration's top value follows exactly (a power-of-two
  scale times an integer below 2**53 is exact in float64);
- :func:`saturated_fraction`: the share of outputs whose real value exceeds the int8 range at
  the chosen scale;
- :func:`requantize_fused`: ``numerics.requantize``, element for element.

Each falls back to the numpy rule where a shift is outside the range the kernels cover
(``|s| >= 62``); tests/sw/test_fast_acc.py checks them against it on extreme values.
"""

from __future__ import annotations

import numba
import numpy as np

from shiftbook import numerics as nx

__all__ = ["acc_extremes", "saturated_fraction", "requantize_fused"]

_MAX_SHIFT = 62


@numba.njit(cache=True, inline="always")
def _rshift_round(v: np.int64, s: np.int64) -> np.int64:
    """numerics.round_shift for one element: round-half-up right shift (s > 0), else left."""
    if s > 0:
        return (v + (np.int64(1) << (s - 1))) >> s
    return v << -s


@numba.njit(cache=True)
def _acc(raw, bias, res, rs, has_res, n, o, i):
    v = raw[n, o, i] + bias[o]
    if has_res:
        v += _rshift_round(np.int64(res[n, o, i]), -rs[o])
    return v


@numba.njit(cache=True)
def _extremes(raw, bias, res, rs, has_res):
    nn, oo, ii = raw.shape
    hi = np.full(oo, np.iinfo(np.int64).min, np.int64)
    lo = np.full(oo, np.iinfo(np.int64).max, np.int64)
    for n in range(nn):
        for o in range(oo):
            h, m = hi[o], lo[o]
            for i in range(ii):
                v = _acc(raw, bias, res, rs, has_res, n, o, i)
                if v > h:
                    h = v
                if v < m:
                    m = v
            hi[o], lo[o] = h, m
    return hi, lo


@numba.njit(cache=True)
def _saturated(raw, bias, res, rs, has_res, scale, relu):
    nn, oo, ii = raw.shape
    count = 0
    for n in range(nn):
        for o in range(oo):
            sc = scale[o]
            for i in range(ii):
                v = np.float64(_acc(raw, bias, res, rs, has_res, n, o, i)) * sc
                if relu and v < 0.0:
                    v = 0.0
                if abs(v) > 127.5:
                    count += 1
    return count


@numba.njit(cache=True)
def _requant(raw, bias, res, rs, has_res, shift, relu, out):
    nn, oo, ii = raw.shape
    for n in range(nn):
        for o in range(oo):
            s = shift[o]
            for i in range(ii):
                v = _rshift_round(_acc(raw, bias, res, rs, has_res, n, o, i), s)
                if relu and v < 0:
                    v = 0
                if v > 127:
                    v = 127
                elif v < -128:
                    v = -128
                out[n, o, i] = v


def _args(raw: np.ndarray, bias: np.ndarray, residual: np.ndarray | None,
          res_shift: np.ndarray | None) -> tuple:
    r = np.ascontiguousarray(raw, dtype=np.int64)
    n, o = r.shape[:2]
    r3 = r.reshape(n, o, -1)
    b = np.ascontiguousarray(np.broadcast_to(np.asarray(bias, np.int64).reshape(-1), (o,)))
    if residual is None:
        res = np.zeros((1, 1, 1), np.int8)
        rs = np.zeros(o, np.int64)
    else:
        res = np.ascontiguousarray(residual).reshape(n, o, -1)
        rs = np.ascontiguousarray(np.broadcast_to(
            np.asarray(res_shift, np.int64).reshape(-1), (o,)))
    return r3, b, res, rs, residual is not None


def _numpy_acc(raw: np.ndarray, bias: np.ndarray, residual: np.ndarray | None,
               res_shift: np.ndarray | None) -> np.ndarray:
    """``raw + bias [+ aligned residual]`` by the numpy rule (the fallback path)."""
    acc = np.asarray(raw, np.int64) + np.asarray(bias, np.int64).reshape(1, -1, 1, 1)
    if residual is not None:
        acc = acc + nx.align_residual(residual, np.asarray(res_shift).reshape(1, -1, 1, 1))
    return acc


def _in_range(*shifts: np.ndarray | None) -> bool:
    return all(s is None or np.size(s) == 0 or int(np.abs(np.asarray(s)).max()) < _MAX_SHIFT
               for s in shifts)


def acc_extremes(raw: np.ndarray, bias: np.ndarray, residual: np.ndarray | None = None,
                 res_shift: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per output channel (axis 1 of ``raw``), max and min of ``raw + bias`` plus the
    residual aligned by ``res_shift`` (``numerics.align_residual``), as int64."""
    if raw.size == 0 or not _in_range(res_shift):
        acc = _numpy_acc(raw, bias, residual, res_shift)
        red = tuple(i for i in range(acc.ndim) if i != 1)
        return acc.max(axis=red), acc.min(axis=red)
    return _extremes(*_args(raw, bias, residual, res_shift))


def saturated_fraction(raw: np.ndarray, bias: np.ndarray, scale: np.ndarray, *,
                       relu: bool, residual: np.ndarray | None = None,
                       res_shift: np.ndarray | None = None) -> float:
    """The share of outputs with ``|relu?(acc) * scale| > 127.5`` (``acc`` as in
    :func:`acc_extremes`, ``scale`` per channel, a power of two)."""
    if raw.size == 0:
        return 0.0
    if not _in_range(res_shift):
        real = _numpy_acc(raw, bias, residual, res_shift) * np.asarray(
            scale, np.float64).reshape(1, -1, 1, 1)
        if relu:
            real = np.maximum(real, 0.0)
        return float(np.mean(np.abs(real) > 127.5))
    sc = np.ascontiguousarray(np.asarray(scale, np.float64).reshape(-1))
    return _saturated(*_args(raw, bias, residual, res_shift), sc, relu) / raw.size


def requantize_fused(raw: np.ndarray, bias: np.ndarray, shift: np.ndarray, *, relu: bool,
                     residual: np.ndarray | None = None,
                     res_shift: np.ndarray | None = None) -> np.ndarray:
    """``numerics.requantize(raw, bias, shift, relu=relu, residual=residual,
    res_shift=res_shift)`` with per-channel ``bias``, ``shift``, ``res_shift``, as int8."""
    o = raw.shape[1] if raw.ndim > 1 else 0
    if raw.ndim < 2 or raw.size == 0 or not _in_range(shift, res_shift):
        shp = (1, o) + (1,) * (raw.ndim - 2)
        out = nx.requantize(raw, np.asarray(bias).reshape(shp), np.asarray(shift).reshape(shp),
                            relu=relu, residual=residual,
                            res_shift=0 if res_shift is None else
                            np.asarray(res_shift).reshape(shp))
        return np.asarray(out).astype(np.int8)
    sh = np.ascontiguousarray(np.broadcast_to(np.asarray(shift, np.int64).reshape(-1), (o,)))
    r3, b, res, rs, has = _args(raw, bias, residual, res_shift)
    out = np.empty(r3.shape, np.int8)
    _requant(r3, b, res, rs, has, sh, relu, out)
    return out.reshape(raw.shape)
