"""GPTQ-style sequential rounding of a layer's float weights onto the shift-code grid.

Weights are rounded one input position at a time (reduction order) and each rounding error is
spread over the weights not yet rounded, weighted by the inverse second moment of the layer's
calibration input (Frantar et al., GPTQ, 2023). :func:`gptq_factor` computes that weighting
once per layer from the calibration input; :func:`gptq_round` rounds at given per-channel
scales (the frontend calls it again each time it lowers ``w_frac`` to fit the accumulator).
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch

from shiftbook import numerics as nx

__all__ = ["GptqFactor", "gptq_factor", "gptq_round"]

_GPTQ_ROWS = 32768     # calibration rows (im2col) used for a layer's input second moment
_GPTQ_DAMP = 0.01      # diagonal damping, relative to the mean diagonal
_GPTQ_ACT_ORDER = True  # round the inputs with the largest second moment first
_GPTQ_BLOCK = 128      # columns per lazy-update block
# Largest reduction with one full second moment. A longer one (ImageNet layers: 2304-4608) is
# split into diagonal blocks of whole input channels of at most this many columns, each
# factored and rounded on its own: the factorization cost falls from k^3 to k*B^2 (ResNet-18's
# layer4: 4608 -> 5 blocks of ~920, ~25x less), and with few calibration rows per layer (32
# images give 1568 rows at 7x7 for 4608 columns) a full second moment is rank-deficient anyway.
# Every digits-sized layer (k <= 576) is one block: its codes are unchanged.
_GPTQ_MAX_COLS = 1024

#: (diagonal blocks ``[(start, stop, u)]`` in permuted column order, each ``u`` the upper
#: Cholesky factor of its block's damped inverse second moment; column order ``perm``;
#: always-zero inputs ``dead``).
GptqFactor = tuple[list[tuple[int, int, np.ndarray]], np.ndarray, np.ndarray]


def _input_rows(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int, int, int], scale: float = 1.0) -> np.ndarray:
    """The im2col rows ``(rows, C*KH*KW)`` (float32) of ``x`` (all of them, or ``_GPTQ_ROWS``
    picked with a fixed seed), gathered straight from the padded input: the same rows, in the same
    order, as ``F.unfold`` followed by the pick, without materialising every patch. An integer
    ``x`` is gathered as it is and the rows scaled by ``scale`` (a power of two: exact) after
    the pick, the values of ``x * scale``."""
    kh, kw = kernel
    sy, sx = stride
    t, left, b, r = padding
    xa = np.asarray(x)
    if not np.issubdtype(xa.dtype, np.integer):
        xa, scale = xa.astype(np.float32) * np.float32(scale), 1.0
    xp = np.pad(xa, ((0, 0), (0, 0), (t, b), (left, r)))
    n, c, hp, wp = xp.shape
    oh, ow = (hp - kh) // sy + 1, (wp - kw) // sx + 1
    total = n * oh * ow
    rows = np.arange(total)
    if total > _GPTQ_ROWS:
        rows = np.sort(np.random.default_rng(0).choice(total, _GPTQ_ROWS, replace=False))
    img, pix = np.divmod(rows, oh * ow)
    oy, ox = np.divmod(pix, ow)
    # channels last, so each kernel tap of every picked window is one gather of whole
    # channel vectors; out[r, c, tap] (channel-major, kernel rows, then columns: unfold's order)
    xt = np.ascontiguousarray(xp.transpose(0, 2, 3, 1)).reshape(-1, c)
    out = np.empty((len(rows), c, kh * kw), xp.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, :, i * kw + j] = xt[(img * hp + oy * sy + i) * wp + ox * sx + j]
    out = out.reshape(len(rows), c * kh * kw).astype(np.float32, copy=False)
    if scale != 1.0:
        out *= np.float32(scale)
    return out


def gptq_factor(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int, int, int], scale: float = 1.0) -> GptqFactor:
    """Per diagonal block, the upper Cholesky factor of the damped inverse input second
    moment (permuted); the column order and the inputs that are always zero, for a layer
    whose real-valued calibration input is ``x * scale`` ``(N, C, H, W)`` (padding: top, left,
    bottom, right). One block (the whole reduction) unless it is longer than
    ``_GPTQ_MAX_COLS``: then ``ceil(k / _GPTQ_MAX_COLS)`` balanced blocks of whole input
    channels, the columns ordered block by block.

    One factorization per block: with ``H = R R^T`` (``R`` upper: the Cholesky factor of
    ``H`` with rows and columns reversed, reversed back), ``H^-1 = R^-T R^-1``, so the factor
    is ``R^-1`` (one triangular inverse; no explicit ``H^-1`` and no second Cholesky)."""
    xs = _input_rows(x, kernel, stride, padding, scale)
    n = max(1, xs.shape[0])
    k = xs.shape[1]
    kk = kernel[0] * kernel[1]
    chans = k // kk
    per = -(-chans // -(-k // _GPTQ_MAX_COLS))     # balanced blocks of whole channels
    step = k if k <= _GPTQ_MAX_COLS else max(1, per) * kk
    spans = [np.arange(c0, min(k, c0 + step)) for c0 in range(0, k, step)]
    hs, deads = [], []
    for cols in spans:
        xb = xs[:, cols[0]: cols[-1] + 1]     # a view: numpy's A^T A on it is one syrk
        # float32 product (a weighting, not an exact value: 2x faster), summed rows in
        # float32 BLAS, then float64 for the factorization
        h = (xb.T @ xb).astype(np.float64) / n
        d = np.diag(h) <= 0
        h[d, d] = 1.0
        hs.append(h)
        deads.append(d)
    dead = np.concatenate(deads)
    damp = _GPTQ_DAMP * float(np.mean(np.concatenate([np.diag(h) for h in hs])))
    blocks: list[tuple[int, int, np.ndarray]] = []
    perm = []
    for cols, h in zip(spans, hs, strict=True):
        c0 = int(cols[0])
        h = h + np.eye(len(cols)) * damp
        order = np.argsort(-np.diag(h), kind="stable") if _GPTQ_ACT_ORDER \
            else np.arange(len(cols))
        h = h[np.ix_(order, order)]
        flip = torch.from_numpy(np.ascontiguousarray(h[::-1, ::-1]))
        rr = np.ascontiguousarray(torch.linalg.cholesky(flip).flip(0, 1).numpy())  # H = R R^T
        blocks.append((c0, c0 + len(cols), _upper_inverse(rr)))
        perm.append(cols[order])
    return blocks, np.concatenate(perm), dead


def _upper_inverse(r: np.ndarray) -> np.ndarray:
    """The inverse of an upper triangular matrix (torch's triangular solve against the
    identity; faster here than scipy's LAPACK ``dtrtri``: 0.49 vs 1.85 s at k = 2304 in a
    one-off timing)."""
    t = torch.from_numpy(r)
    inv = torch.linalg.solve_triangular(t, torch.eye(len(r), dtype=t.dtype), upper=True)
    return np.triu(inv.numpy())     # (finite: r is a Cholesky factor, positive diagonal)


def _rounded(v: np.ndarray, up: np.ndarray, scale: np.ndarray, emax: int,
             rounding: str) -> np.ndarray:
    """The real value each of ``v`` rounds to on the shift grid at scales ``scale = 2**-wf``
    (``up = 2**wf``): elementwise the same arithmetic as ``numerics.float_to_shift`` and
    ``decode_shift``, without packing codes (the GPTQ inner loop's one rounding step)."""
    x = np.abs(v) * up
    with np.errstate(divide="ignore"):
        lx = np.log2(np.where(x > 0, x, 1.0))
    if rounding == "log":
        e = np.floor(lx + 0.5)
        zero = (x <= 0) | (lx < -0.5)
    else:
        fl = np.floor(lx)
        e = np.where(x >= 1.5 * np.exp2(fl), fl + 1, fl)
        zero = (x <= 0) | (x < 0.5)
        e = np.where(x < 1.0, 0, e)
    mag = np.exp2(np.clip(e, 0, emax))
    return np.where(zero, 0.0, np.where(v < 0, -mag, mag)) * scale


@numba.njit(cache=True)
def _round1(v: float, up: float, scale: float, emax: int, log: bool) -> float:
    """One weight of :func:`_rounded` (the same arithmetic, scalar)."""
    x = abs(v) * up
    lx = math.log2(x) if x > 0 else 0.0
    if log:
        e = math.floor(lx + 0.5)
        zero = x <= 0 or lx < -0.5
    else:
        fl = math.floor(lx)
        e = fl + 1 if x >= 1.5 * 2.0**fl else fl
        zero = x <= 0 or x < 0.5
        if x < 1.0:
            e = 0.0
    if zero:
        return 0.0
    mag = 2.0 ** min(max(e, 0.0), float(emax))
    return (-mag if v < 0 else mag) * scale


@numba.njit(cache=True)
def _round_batch(blk: np.ndarray, ub: np.ndarray, up: np.ndarray, scale: np.ndarray,
                 emax: int, log: bool, pre: np.ndarray, got: np.ndarray,
                 errs: np.ndarray) -> None:
    """The columns of one lazy batch, in order, for every stacked block and output channel
    (channels are independent: each one's errors feed only its own later weights).
    ``blk`` ``(blocks, n, O)`` (column-major: the innermost loop runs over the channels,
    contiguous) is updated in place; ``pre``, ``got``, ``errs`` are written."""
    nb, n, o = blk.shape
    for b in range(nb):
        for j in range(n):
            d = ub[b, j, j]
            for r in range(o):
                v = blk[b, j, r]
                q = _round1(v, up[r], scale[r], emax, log)
                pre[b, j, r] = v
                got[b, j, r] = q
                errs[b, j, r] = (v - q) / d
            for c in range(j + 1, n):
                u = ub[b, j, c]
                for r in range(o):
                    blk[b, c, r] -= errs[b, j, r] * u


def gptq_round(w: np.ndarray, wf: np.ndarray, factor: GptqFactor, exp_bits: int,
               rounding: str, compiled: bool = True) -> np.ndarray:
    """Shift codes (shaped like ``w``, ``(O, I, KH, KW)``) of the float weights ``w`` at the
    per-output-channel scales ``2**-wf``, rounded sequentially with error feedback weighted
    by ``factor`` (:func:`gptq_factor` of the layer's calibration input).

    The diagonal blocks are independent (errors stay inside their block), so they are rounded
    side by side: stacked ``(blocks, L, O)`` (shorter blocks padded with zero weights and an
    identity factor, which round to zero with no error), one step per column position over
    every block and output channel at once. Inside a block lazy batch updates of
    ``_GPTQ_BLOCK`` columns: each column rounded and its error fed to the batch's later
    columns (the numba kernel :func:`_round_batch`; ``compiled=False``: the same steps in
    numpy); the rest is updated once per batch (one batched BLAS product). The codes are
    packed once at the end from the values each column was rounded from (``float_to_shift``
    of the whole matrix) and checked against the values the loop used."""
    o = w.shape[0]
    blocks, perm, dead = factor
    k = len(perm)
    work = w.reshape(o, k).copy()
    work[:, dead] = 0.0
    work = work[:, perm]
    nb = len(blocks)
    ln = max(b1 - b0 for b0, b1, _ in blocks)
    # column-major stacks (blocks, column, channel): a column step updates every channel
    stack = np.zeros((nb, ln, o))
    us = np.zeros((nb, ln, ln))
    for i, (b0, b1, u) in enumerate(blocks):
        stack[i, : b1 - b0] = work[:, b0:b1].T
        us[i, : b1 - b0, : b1 - b0] = u
        us[i, np.arange(b1 - b0, ln), np.arange(b1 - b0, ln)] = 1.0
    pre = np.empty((nb, ln, o))     # the value each weight was rounded from
    got = np.empty((nb, ln, o))     # the real value it rounded to
    scale = np.exp2(-wf.astype(np.float64))
    up = np.exp2(wf.reshape(-1).astype(np.int64)).astype(np.float64)
    emax = (1 << exp_bits) - 1
    for i1 in range(0, ln, _GPTQ_BLOCK):
        i2 = min(i1 + _GPTQ_BLOCK, ln)
        blk = stack[:, i1:i2].copy()
        ub = np.ascontiguousarray(us[:, i1:i2, i1:i2])
        errs = np.empty((nb, i2 - i1, o))
        if compiled:
            _round_batch(blk, ub, up, scale, emax, rounding == "log", pre[:, i1:i2],
                         got[:, i1:i2], errs)
        else:
            for j in range(i2 - i1):
                col = blk[:, j]                                     # (blocks, O)
                q = _rounded(col, up, scale, emax, rounding)
                pre[:, i1 + j], got[:, i1 + j] = col, q
                err = (col - q) / ub[:, j, j][:, None]
                blk[:, j + 1:] -= ub[:, j, j + 1:, None] * err[:, None, :]
                errs[:, j] = err
        if i2 < ln:
            stack[:, i2:] -= np.matmul(us[:, i1:i2, i2:].transpose(0, 2, 1), errs)
    pre_k = np.empty((o, k))
    got_k = np.empty((o, k))
    for i, (b0, b1, _) in enumerate(blocks):
        pre_k[:, b0:b1] = pre[i, : b1 - b0].T
        got_k[:, b0:b1] = got[i, : b1 - b0].T
    codes, _ = nx.float_to_shift(pre_k, exp_bits, rounding=rounding, w_frac=wf.reshape(-1, 1))
    codes = np.asarray(codes, dtype=np.int64)
    if not np.array_equal(nx.decode_shift(codes, exp_bits) * scale[:, None], got_k):
        if compiled:    # libm's log2 and numpy's may differ by an ulp at a rounding tie
            return gptq_round(w, wf, factor, exp_bits, rounding, compiled=False)
        raise AssertionError("GPTQ: packed codes differ from the values rounded to")
    out = np.empty_like(codes)
    out[:, perm] = codes
    return out.reshape(w.shape)
