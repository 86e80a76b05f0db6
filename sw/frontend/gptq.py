"""GPTQ-style sequential rounding of a layer's float weights onto the shift-code grid.

Weights are rounded one input position at a time (reduction order) and each rounding error is
spread over the weights not yet rounded, weighted by the inverse second moment of the layer's
calibration input (Frantar et al., GPTQ, 2023). :func:`gptq_factor` computes that weighting
once per layer from the calibration input; :func:`gptq_round` rounds at given per-channel
scales (the frontend calls it again each time it lowers ``w_frac`` to fit the accumulator).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from shiftbook import numerics as nx

__all__ = ["GptqFactor", "gptq_factor", "gptq_round"]

_GPTQ_ROWS = 32768     # calibration rows (im2col) used for a layer's input second moment
_GPTQ_DAMP = 0.01      # diagonal damping, relative to the mean diagonal
_GPTQ_ACT_ORDER = True  # round the inputs with the largest second moment first
_GPTQ_BLOCK = 128      # columns per lazy-update block

#: (upper Cholesky factor ``u``, column order ``perm``, always-zero inputs ``dead``).
GptqFactor = tuple[np.ndarray, np.ndarray, np.ndarray]


def gptq_factor(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int, int, int]) -> GptqFactor:
    """Upper Cholesky factor of the damped inverse input second moment (permuted), the column
    order and the inputs that are always zero, for a layer whose real-valued calibration input
    is ``x`` ``(N, C, H, W)`` (padding: top, left, bottom, right)."""
    kh, kw = kernel
    t, left, b, r = padding
    xt = F.pad(torch.from_numpy(np.asarray(x, dtype=np.float64)), (left, r, t, b))
    cols = F.unfold(xt, (kh, kw), stride=stride)              # (N, K, L)
    xs = cols.permute(0, 2, 1).reshape(-1, cols.shape[1]).numpy()
    if xs.shape[0] > _GPTQ_ROWS:
        pick = np.random.default_rng(0).choice(xs.shape[0], _GPTQ_ROWS, replace=False)
        xs = xs[np.sort(pick)]
    h = xs.T @ xs / max(1, xs.shape[0])
    k = h.shape[0]
    dead = np.diag(h) <= 0
    h[dead, dead] = 1.0
    h = h + np.eye(k) * (_GPTQ_DAMP * float(np.mean(np.diag(h))))
    perm = np.argsort(-np.diag(h), kind="stable") if _GPTQ_ACT_ORDER else np.arange(k)
    h = h[np.ix_(perm, perm)]
    u = np.linalg.cholesky(np.linalg.inv(h)).T                # H^-1 = U^T U, U upper
    return u, perm, dead


def gptq_round(w: np.ndarray, wf: np.ndarray, factor: GptqFactor, exp_bits: int,
               rounding: str) -> np.ndarray:
    """Shift codes (shaped like ``w``, ``(O, I, KH, KW)``) of the float weights ``w`` at the
    per-output-channel scales ``2**-wf``, rounded sequentially with error feedback weighted
    by ``factor`` (:func:`gptq_factor` of the layer's calibration input)."""
    o = w.shape[0]
    u, perm, dead = factor
    k = u.shape[0]
    work = w.reshape(o, k).copy()
    work[:, dead] = 0.0
    work = work[:, perm]
    codes = np.empty((o, k), np.int64)
    scale = np.exp2(-wf.astype(np.float64))
    for i1 in range(0, k, _GPTQ_BLOCK):     # blocked: the same result, BLAS-sized updates
        i2 = min(i1 + _GPTQ_BLOCK, k)
        blk = work[:, i1:i2].copy()
        errs = np.zeros((o, i2 - i1))
        for j in range(i2 - i1):
            c, _ = nx.float_to_shift(blk[:, j:j + 1], exp_bits, rounding=rounding,
                                     w_frac=wf.reshape(-1, 1))
            c = np.asarray(c, dtype=np.int64).reshape(-1)
            codes[:, i1 + j] = c
            q = nx.decode_shift(c, exp_bits) * scale
            err = (blk[:, j] - q) / u[i1 + j, i1 + j]
            blk[:, j + 1:] -= np.outer(err, u[i1 + j, i1 + j + 1:i2])
            errs[:, j] = err
        work[:, i2:] -= errs @ u[i1:i2, i2:]
    out = np.empty_like(codes)
    out[:, perm] = codes
    return out.reshape(w.shape)
