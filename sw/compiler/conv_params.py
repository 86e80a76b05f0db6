"""Parameter blobs of one convolution in external memory: its WGT rows (raw shift codes, int8
values for the multiplier PE, or a codebook layer's packed index rows per plan chunk) and its
BIAS rows (bias, requantization shift and residual shift per output channel)."""

from __future__ import annotations

import numpy as np

from shiftbook import numerics as nx
from shiftbook import weights
from shiftbook.config import CoreConfig
from shiftbook.sw.compiler.conv_plan import ConvPlan, check_codebook
from shiftbook.sw.compiler.tiling import CompileError
from shiftbook.sw.ir import Conv2d

__all__ = ["codebook_weight_bytes", "conv_weight_bytes", "conv_bias_bytes"]


def codebook_weight_bytes(op: Conv2d, cfg: CoreConfig, plan: ConvPlan) -> bytes:
    """WGT rows of a codebook layer for ``plan``'s chunks: per group of ``cols`` output
    channels, per chunk, the chunk's index rows (``weightfmt.pack_index_rows`` of its blocks),
    ``plan.chunk_wrows`` rows each (the first at ``plan.wgt_rows(g, k)[0]``)."""
    fmt = check_codebook(op, cfg)
    assert plan.fmt is not None
    out = bytearray()
    for g in range(plan.groups):
        for k in range(len(plan.chunks)):
            b0, b1 = plan.chunk_blocks(k)
            blob = weights.pack_index_rows(fmt.indices[g * cfg.cols:(g + 1) * cfg.cols, b0:b1],
                                      fmt.index_bits, cfg.cols, cfg.wbuf_row_bytes)
            assert len(blob) == plan.chunk_wrows[k][1] * cfg.wbuf_row_bytes
            out += blob
    return bytes(out)


def conv_weight_bytes(op: Conv2d, cfg: CoreConfig) -> bytes:
    """WGT rows of every group: row ``(g*T + t)*C*KK + (c*KH + ky)*KW + kx`` (term ``t`` of
    ``T``: ``ConvPlan.wgt_rows``), byte j = column j (raw shift codes; codebook layers:
    :func:`codebook_weight_bytes`; the multiplier PE takes a two-term weight's value)."""
    if op.weight_format is not None:
        raise CompileError(f"layer {op.name!r}: codebook weights are packed per plan "
                           f"(codebook_weight_bytes)")
    O, C, KH, KW = op.weight.shape
    groups = -(-O // cfg.cols)
    wrow = cfg.wbuf_row_bytes
    if cfg.pe == "mult":
        vals = op.values()
        bad = (vals < -128) | (vals > 127)
        if np.any(bad):
            o = int(np.argwhere(bad)[0][0])
            raise CompileError(f"layer {op.name!r}: weight value {int(vals[bad][0])} in output "
                               f"channel {o} does not fit the int8 multiplier PE")
        data = vals.astype(np.int8).view(np.uint8).astype(np.int64)
        pad = 0
    else:
        if op.exp_bits != cfg.exp_bits:
            raise CompileError(f"layer {op.name!r}: weights use exp_bits={op.exp_bits}, the core "
                               f"decodes exp_bits={cfg.exp_bits}")
        # two-term layers: each group's rows of the first term, then of the second
        data = op.weight if op.weight2 is None else np.stack([op.weight, op.weight2], axis=1)
        pad = nx.zero_code(cfg.exp_bits)
    # (O, T*C*KK) -> (groups, T*C*KK, wrow)
    n = data.size // O
    flat = data.reshape(O, n)
    out = np.full((groups * cfg.cols, n), pad, np.int64)
    out[:O] = flat
    out = out.reshape(groups, cfg.cols, n).transpose(0, 2, 1)
    rows = np.zeros((groups, n, wrow), np.uint8)
    rows[:, :, : cfg.cols] = out.astype(np.uint8)
    return rows.tobytes()


def conv_bias_bytes(op: Conv2d, cfg: CoreConfig) -> bytes:
    """BIAS rows, one per group: per column int32 bias, uint8 shift, int8 res_shift, 2 x 0."""
    O = op.out_channels
    groups = -(-O // cfg.cols)
    lo, hi = nx.int_range(32)
    if np.any((op.bias < lo) | (op.bias > hi)):
        raise CompileError(f"layer {op.name!r}: a bias does not fit int32")
    # (the requantizer adds the bias at the accumulator's width, hw/requant.py)
    lo, hi = nx.int_range(cfg.acc_bits)
    if np.any((op.bias < lo) | (op.bias > hi)):
        raise CompileError(f"layer {op.name!r}: a bias does not fit the {cfg.acc_bits}-bit "
                           f"accumulator")
    if np.any((op.shift < 0) | (op.shift > cfg.acc_bits)):
        raise CompileError(f"layer {op.name!r}: requantization shifts must be in "
                           f"[0, {cfg.acc_bits}], got {op.shift.min()}..{op.shift.max()}")
    if np.any((op.res_shift < -128) | (op.res_shift > 127)):
        raise CompileError(f"layer {op.name!r}: res_shift does not fit int8")
    ent = np.zeros((groups * cfg.cols, 8), np.uint8)
    ent[:O, 0:4] = op.bias.astype("<i4").view(np.uint8).reshape(O, 4)
    ent[:O, 4] = op.shift.astype(np.uint8)
    ent[:O, 5] = op.res_shift.astype(np.int8).view(np.uint8)
    rows = np.zeros((groups, cfg.bbuf_row_bytes), np.uint8)
    rows[:, : 8 * cfg.cols] = ent.reshape(groups, 8 * cfg.cols)
    return rows.tobytes()
