"""Tiling and scheduling of one convolution (Linear is a 1x1 convolution on a 1x1 input).

Tiling (see docs/bundle.md for the metadata it records):

- output channels in *groups* of ``cols`` (the last one partial, weight columns padded with the
  zero code);
- output rows in *bands* that fit half of OUT (double buffer; all of it if one band does not
  fit half), input rows of a band loaded into ACT (a band's rows are the input rows its
  output rows need);
- output pixels of a band in raster *tiles* of ``rows`` pixels (wrapping across output rows);
- the reduction in channel *chunks* when a group's weights do not fit half of WGT or a band's
  channels do not fit ACT (``clear`` on the first chunk, ``drain`` on the last), and in
  kernel-row chunks (one channel each) when one channel's kernel does not fit WGT.

Loop order: band, group, tile, chunk. ACT, WGT and BIAS are cut into equal slots; a resource
(band x channel range, group x chunk, group) is loaded into a slot on demand or prefetched
while earlier tiles compute, the victim chosen by furthest next use (the whole schedule is
known). OUT alternates two slots: group g+1 computes while group g is stored.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftbook import numerics as nx
from shiftbook import weights as wf
from shiftbook.config import CoreConfig
from shiftbook.isa import (
    FIELDS,
    WFMT_CODEBOOK,
    WFMT_RAW,
    Buf,
    Flag,
    Insn,
    Mode,
    Opcode,
    Reg,
    SyncMask,
)
from shiftbook.placement import Placement
from shiftbook.sw.compiler.emitter import Emitter, Slot
from shiftbook.sw.ir import Conv2d
from shiftbook.weights import CodebookWeights

__all__ = ["ConvPlan", "plan_conv", "conv_weight_bytes", "conv_bias_bytes", "schedule_conv",
           "dma_pieces", "CompileError", "check_codebook", "codebook_weight_bytes"]

MAX_WORDS = (1 << FIELDS[Opcode.LOAD]["words"][1]) - 1
MAX_RUNS = (1 << FIELDS[Opcode.LOAD]["runs"][1]) - 1
MAX_ESTRIDE = (1 << FIELDS[Opcode.LOAD]["ext_stride"][1]) - 1
MAX_BSTRIDE = (1 << FIELDS[Opcode.LOAD]["buf_stride"][1]) - 1
PREFETCH_LOOKAHEAD = 32


class CompileError(ValueError):
    """A layer the compiler cannot map onto the configured core (the message names it)."""


def _up(v: int, m: int) -> int:
    return -(-v // m) * m


def out_band_limit(name: str, y: Placement, cfg: CoreConfig) -> tuple[int, int]:
    """OUT slots per bank and the most output rows a band may hold: two slots if a band of at
    least one output row fits half of OUT, else one (refused if not even one row fits)."""
    n_out, bo_max = 2, (cfg.obuf_bytes // 2) // y.pitch
    if bo_max == 0:
        n_out, bo_max = 1, cfg.obuf_bytes // y.pitch
    if bo_max == 0:
        raise CompileError(f"layer {name!r}: an output row of {y.pitch} bytes does not fit "
                           f"the {cfg.obuf_bytes}-byte output buffer")
    return n_out, bo_max


def input_bands(bands: list[tuple[int, int]], H: int, KH: int, sy: int,
                pt: int) -> list[tuple[int, int]]:
    """Input rows ``[lo, hi)`` that each output band ``[o0, o1)`` reads (padding excluded)."""
    out = []
    for o0, o1 in bands:
        lo = max(0, o0 * sy - pt)
        hi = min(H, (o1 - 1) * sy - pt + KH)
        out.append((lo, max(lo, hi)))
    return out


@dataclass
class ConvPlan:
    name: str
    C: int
    H: int
    W: int
    O: int
    KH: int
    KW: int
    sy: int
    sx: int
    pad: tuple[int, int, int, int]
    OH: int
    OW: int
    groups: int
    bands: list[tuple[int, int]]        # output rows [oy0, oy1)
    band_in: list[tuple[int, int]]      # input rows [iy_lo, iy_hi) held in ACT
    chunks: list[tuple[int, int, int, int]]  # (c0, c1, ky0, ky1) per reduction step
    act_ranges: list[tuple[int, int]]   # input channels per ACT resource
    a_plane: int
    act_slot_bytes: int
    n_act: int
    wgt_slot_rows: int
    n_wgt: int
    n_bias: int
    out_slot_bytes: int
    n_out: int
    # Codebook layers (WFMT = 1): the format, index rows per WGT row, and per chunk its
    # (first WGT row within a group's rows, WGT rows) in the layer's weight blob.
    fmt: CodebookWeights | None = None
    idx_per_row: int = 0
    chunk_wrows: list[tuple[int, int]] | None = None

    @property
    def group_wrows(self) -> int:
        """WGT rows of one group in a codebook layer's weight blob."""
        assert self.chunk_wrows is not None
        return sum(n for _, n in self.chunk_wrows)

    def chunk_blocks(self, k: int) -> tuple[int, int]:
        """Blocks ``[b0, b1)`` (of every output channel) that codebook chunk ``k`` reduces."""
        assert self.fmt is not None
        c0, c1, _, _ = self.chunks[k]
        return c0 * self.kk // self.fmt.d, -(-c1 * self.kk // self.fmt.d)

    @property
    def kk(self) -> int:
        return self.KH * self.KW

    def wgt_rows(self, g: int, k: int) -> tuple[int, int]:
        """(first row in the layer's weight blob, row count) of group g, chunk k."""
        c0, c1, k0, k1 = self.chunks[k]
        if self.fmt is None:
            return (g * self.C * self.kk + c0 * self.kk + k0 * self.KW,
                    (c1 - c0) * (k1 - k0) * self.KW)
        assert self.chunk_wrows is not None
        off, n = self.chunk_wrows[k]
        return g * self.group_wrows + off, n

    def tiles(self, band: int, rows: int) -> list[int]:
        oy0, oy1 = self.bands[band]
        return list(range(oy0 * self.OW, oy1 * self.OW, rows))


def plan_conv(op: Conv2d, x: Placement, y: Placement, cfg: CoreConfig, *,
              double_act: bool = False) -> ConvPlan:
    """Tile ``op``. With several input bands, ``double_act`` makes bands small enough for two
    ACT slots (the next band loads while one computes; more, smaller bands)."""
    C, H, W = x.shape
    O, OH, OW = y.shape
    KH, KW = op.kernel
    sy, sx = op.stride
    pt, pl, pb, pr = op.padding
    B = cfg.bus_bytes
    groups = -(-O // cfg.cols)

    n_out, bo_max = out_band_limit(op.name, y, cfg)

    def in_rows(bo: int) -> int:
        return min(H, (bo - 1) * sy + KH)

    bo = min(OH, bo_max)
    while bo > 1 and C * in_rows(bo) * x.pitch > cfg.abuf_bytes:
        bo -= 1
    if bo < OH and double_act:
        # Bands small enough for two ACT slots (as long as a band still fills one tile).
        bo2 = bo
        while bo2 > 1 and 2 * C * in_rows(bo2) * x.pitch > cfg.abuf_bytes:
            bo2 -= 1
        if 2 * C * in_rows(bo2) * x.pitch <= cfg.abuf_bytes and bo2 * OW >= cfg.rows:
            bo = bo2
    bands = [(o0, min(OH, o0 + bo)) for o0 in range(0, OH, bo)]
    band_in = input_bands(bands, H, KH, sy, pt)
    max_rows = max(1, max(hi - lo for lo, hi in band_in))
    a_plane = max_rows * x.pitch
    act_ch = cfg.abuf_bytes // a_plane
    if act_ch == 0:
        raise CompileError(f"layer {op.name!r}: {max_rows} input rows of {x.pitch} bytes do "
                           f"not fit the {cfg.abuf_bytes}-byte activation buffer")
    kk = KH * KW
    fmt = op.weight_format
    if fmt is not None:
        return _plan_codebook(op, fmt, cfg, C, H, W, O, OH, OW, KH, KW, sy, sx,
                              (pt, pl, pb, pr), groups, bands, band_in, a_plane, act_ch, y, bo,
                              n_out)
    w_ch = (cfg.wbuf_rows // 2) // kk or cfg.wbuf_rows // kk
    if w_ch:
        nch = min(C, w_ch, act_ch)
        chunks = [(c0, min(C, c0 + nch), 0, KH) for c0 in range(0, C, nch)]
        wgt_slot = nch * kk
    else:
        # Not even one channel's kernel fits: split the kernel into row groups (one channel
        # per COMPUTE, KH set per COMPUTE, iy0 and act_base moved down by the first row).
        kh_per = (cfg.wbuf_rows // 2) // KW or cfg.wbuf_rows // KW
        if kh_per == 0:
            raise CompileError(f"layer {op.name!r}: one {KW}-wide kernel row needs {KW} weight "
                               f"rows, the weight buffer has {cfg.wbuf_rows}")
        nch = 1
        chunks = [(c0, c0 + 1, k0, min(KH, k0 + kh_per)) for c0 in range(C)
                  for k0 in range(0, KH, kh_per)]
        wgt_slot = kh_per * KW
    act_ranges = [(0, C)] if act_ch >= C else [(c0, min(C, c0 + nch)) for c0 in range(0, C, nch)]
    act_slot = _up(max(c1 - c0 for c0, c1 in act_ranges) * a_plane, B)
    n_act = max(1, min(cfg.abuf_bytes // act_slot, len(bands) * len(act_ranges)))
    n_wgt = max(1, min(cfg.wbuf_rows // wgt_slot, groups * len(chunks)))
    n_bias = max(1, min(cfg.bbuf_rows, groups))
    out_slot = _up(bo * y.pitch, B)
    return ConvPlan(op.name, C, H, W, O, KH, KW, sy, sx, (pt, pl, pb, pr), OH, OW, groups,
                    bands, band_in, chunks, act_ranges, a_plane, act_slot, n_act, wgt_slot,
                    n_wgt, n_bias, out_slot, n_out)


def check_codebook(op: Conv2d, cfg: CoreConfig) -> CodebookWeights:
    """The layer's codebook format, refused with one line if the core cannot decode it."""
    fmt = op.weight_format
    assert fmt is not None
    if cfg.pe != "shift":
        raise CompileError(f"layer {op.name!r}: codebook weights need the shift PE, the core "
                           f"has pe={cfg.pe!r}")
    try:
        fmt.check_config(cfg.max_k, cfg.max_d, cfg.exp_bits, what=f"layer {op.name!r}")
        wf.index_rows_per_wgt_row(cfg.cols, fmt.index_bits, cfg.wbuf_row_bytes)
    except wf.WeightFormatError as e:
        raise CompileError(str(e)) from None
    return fmt


def _plan_codebook(op: Conv2d, fmt: CodebookWeights, cfg: CoreConfig, C: int, H: int, W: int,
                   O: int, OH: int, OW: int, KH: int, KW: int, sy: int, sx: int,
                   pad: tuple[int, int, int, int], groups: int, bands: list[tuple[int, int]],
                   band_in: list[tuple[int, int]], a_plane: int, act_ch: int, y: Placement,
                   bo: int, n_out: int) -> ConvPlan:
    """Channel chunks of a codebook layer: multiples of ``channels_per_block`` channels (a
    block never straddles two chunks; only the layer's last chunk may end inside one) whose
    index rows fit half of WGT (all of it if half holds none). Each chunk's index rows start
    a WGT row of the weight blob (:func:`codebook_weight_bytes`)."""
    check_codebook(op, cfg)
    kk, d, B = KH * KW, fmt.d, cfg.bus_bytes
    per = wf.index_rows_per_wgt_row(cfg.cols, fmt.index_bits, cfg.wbuf_row_bytes)
    gran = wf.channels_per_block(KH, KW, d)

    def wrows(nch: int) -> int:
        nblocks = -(-nch * kk // d)
        return -(-nblocks // per)

    half = cfg.wbuf_rows // 2
    cap = half if wrows(min(C, gran)) <= half else cfg.wbuf_rows
    if C <= act_ch and wrows(C) <= cap:
        nch = C
    else:
        nch = min(C, act_ch)
        nch -= nch % gran
        while nch > 0 and wrows(nch) > cap:
            nch -= gran
        if nch <= 0:
            raise CompileError(f"layer {op.name!r}: a codebook chunk of {gran} channels (whole "
                               f"blocks of d={d}) does not fit ACT ({act_ch} channels) or WGT "
                               f"({cap} rows)")
    chunks = [(c0, min(C, c0 + nch), 0, KH) for c0 in range(0, C, nch)]
    chunk_wrows, off = [], 0
    for c0, c1, _, _ in chunks:
        chunk_wrows.append((off, wrows(c1 - c0)))
        off += wrows(c1 - c0)
    act_ranges = [(0, C)] if act_ch >= C else [(c0, min(C, c0 + nch)) for c0 in range(0, C, nch)]
    act_slot = _up(max(c1 - c0 for c0, c1 in act_ranges) * a_plane, B)
    n_act = max(1, min(cfg.abuf_bytes // act_slot, len(bands) * len(act_ranges)))
    wgt_slot = wrows(nch)
    n_wgt = max(1, min(cfg.wbuf_rows // wgt_slot, groups * len(chunks)))
    n_bias = max(1, min(cfg.bbuf_rows, groups))
    out_slot = _up(bo * y.pitch, B)
    return ConvPlan(op.name, C, H, W, O, KH, KW, sy, sx, pad, OH, OW, groups, bands, band_in,
                    chunks, act_ranges, a_plane, act_slot, n_act, wgt_slot, n_wgt, n_bias,
                    out_slot, n_out, fmt, per, chunk_wrows)


# ---------------------------------------------------------------- parameter blobs
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
            blob = wf.pack_index_rows(fmt.indices[g * cfg.cols:(g + 1) * cfg.cols, b0:b1],
                                      fmt.index_bits, cfg.cols, cfg.wbuf_row_bytes)
            assert len(blob) == plan.chunk_wrows[k][1] * cfg.wbuf_row_bytes
            out += blob
    return bytes(out)


def conv_weight_bytes(op: Conv2d, cfg: CoreConfig) -> bytes:
    """WGT rows of every group: row ``g*C*KK + (c*KH + ky)*KW + kx``, byte j = column j
    (raw shift codes; codebook layers: :func:`codebook_weight_bytes`)."""
    if op.weight_format is not None:
        raise CompileError(f"layer {op.name!r}: codebook weights are packed per plan "
                           f"(codebook_weight_bytes)")
    O, C, KH, KW = op.weight.shape
    groups = -(-O // cfg.cols)
    wrow = cfg.wbuf_row_bytes
    if cfg.pe == "mult":
        vals = np.asarray(nx.decode_shift(op.weight, op.exp_bits), dtype=np.int64)
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
        data = op.weight
        pad = nx.zero_code(cfg.exp_bits)
    # (O, C*KK) -> (groups, C*KK, wrow)
    flat = data.reshape(O, C * KH * KW)
    out = np.full((groups * cfg.cols, C * KH * KW), pad, np.int64)
    out[:O] = flat
    out = out.reshape(groups, cfg.cols, C * KH * KW).transpose(0, 2, 1)
    rows = np.zeros((groups, C * KH * KW, wrow), np.uint8)
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


# ---------------------------------------------------------------- DMA helpers
def dma_pieces(op: Opcode, buf: Buf, ext: int, bufa: int, words: int, runs: int,
               es: int, bs: int, piece: int) -> list[Insn]:
    """A 2-D transfer cut into instructions of at most ``piece`` words each (where possible)."""
    piece = max(1, min(piece, MAX_WORDS))
    out: list[Insn] = []

    def mk(e: int, b: int, w: int, r: int, s1: int, s2: int) -> Insn:
        return Insn(op, {"buf": int(buf), "ext_addr": e, "buf_addr": b, "words": w, "runs": r,
                         "ext_stride": s1 if r > 1 else 0, "buf_stride": s2 if r > 1 else 0})

    if words <= 0 or runs <= 0:
        return out
    if runs == 1 or (es == words and bs == words):
        total, pos = words * runs, 0
        while pos < total:
            n = min(piece, total - pos)
            out.append(mk(ext + pos, bufa + pos, n, 1, 0, 0))
            pos += n
    elif words <= piece and es <= MAX_ESTRIDE and bs <= MAX_BSTRIDE:
        rpp = max(1, min(MAX_RUNS, piece // words))
        for r0 in range(0, runs, rpp):
            out.append(mk(ext + r0 * es, bufa + r0 * bs, words, min(rpp, runs - r0), es, bs))
    else:
        for r in range(runs):
            for w0 in range(0, words, piece):
                out.append(mk(ext + r * es + w0, bufa + r * bs + w0, min(piece, words - w0), 1,
                              0, 0))
    return out


# ---------------------------------------------------------------- schedule
def rough_cycles(insns: list[Insn], cfg: CoreConfig) -> int:
    """A quick timing replay (issue to a busy unit waits, SYNC waits) to choose between
    plans; the simulator's cycle model (sim/functional) is the one that is reported."""
    t = dma = comp = 0
    regs: dict[int, int] = {}
    for insn in insns:
        if insn.op == Opcode.SET:
            regs[insn.args["reg"]] = insn.args["value"]
        elif insn.op in (Opcode.LOAD, Opcode.STORE):
            t = max(t, dma)
            dma = t + _dma_cycles(insn, cfg)
        elif insn.op == Opcode.COMPUTE:
            t = max(t, comp)
            comp = t + 2 + regs[Reg.NCH] * regs[Reg.KH] * regs[Reg.KW]
        elif insn.op == Opcode.SYNC:
            m = insn.args["mask"]
            t = max(t, dma if m & SyncMask.DMA else 0, comp + cfg.rows
                    if m & SyncMask.COMPUTE else 0)
        t += 1
    return max(t, dma, comp)


def _dma_cycles(insn: Insn, cfg: CoreConfig) -> int:
    """Rough duration of a DMA instruction (for pacing the interleave, not a cycle model)."""
    n = insn.args["words"] * insn.args["runs"]
    return n + 2 + (cfg.mem_latency if insn.op == Opcode.LOAD else 0)


class _Pool:
    def __init__(self, buf: str, n: int, size: int) -> None:
        self.slots = [Slot(buf, i, i * size, size) for i in range(n)]

    def find(self, key: Hashable) -> Slot | None:
        for s in self.slots:
            if s.key == key:
                return s
        return None


def schedule_conv(em: Emitter, op: Conv2d, plan: ConvPlan, cfg: CoreConfig, x: Placement,
                  y: Placement, w_addr: int, b_addr: int, layer_index: int,
                  res: Placement | None = None, cb_addr: int | None = None) -> dict[str, Any]:
    """Emit one layer's instructions (ending with ``SYNC ALL; MARK layer_index``).

    With ``res`` (the residual tensor, shaped like ``y``), each output unit's residual band is
    loaded into the RES slot at the same offsets as its OUT slot, one unit ahead.
    """
    B = cfg.bus_bytes
    R, NC = cfg.rows, cfg.cols
    wrow_w = cfg.wbuf_row_bytes // B
    brow_w = cfg.bbuf_row_bytes // B
    obank_w = cfg.obuf_bytes // B
    pt, pl, _, _ = plan.pad

    act = _Pool("ACT", plan.n_act, plan.act_slot_bytes)
    wgt = _Pool("WGT", plan.n_wgt, plan.wgt_slot_rows)
    bia = _Pool("BIAS", plan.n_bias, 1)
    outs = [Slot("OUT", i, i * plan.out_slot_bytes, plan.out_slot_bytes)
            for i in range(plan.n_out)]
    ress = [Slot("RES", i, i * plan.out_slot_bytes, plan.out_slot_bytes)
            for i in range(plan.n_out)]
    n_units = len(plan.bands) * plan.groups

    def res_pieces(u: int) -> list[Insn]:
        assert res is not None
        b, g = divmod(u, plan.groups)
        oy0, oy1 = plan.bands[b]
        return dma_pieces(Opcode.LOAD, Buf.RES,
                          (res.addr + g * NC * res.plane + oy0 * res.pitch) // B,
                          ress[u % plan.n_out].base // B, (oy1 - oy0) * res.pitch // B,
                          min(NC, plan.O - g * NC), res.plane // B, obank_w, MAX_WORDS)

    def res_ready(u: int) -> int:
        """Load unit u's residual now unless queued or loaded; the DMA index to wait for."""
        slot = ress[u % plan.n_out]
        if slot.key != u:
            slot.assign(u)
            for insn in res_pieces(u):
                em.emit_dma(insn, slot)
        return em.ready(slot)

    def res_prefetch(u: int) -> None:
        if res is None or u >= n_units or plan.n_out < 2:
            return  # (one OUT slot: unit u+1's RES slot is unit u's)
        slot = ress[u % plan.n_out]
        if slot.key != u and slot.last_compute <= em.comp_synced:
            slot.assign(u)
            em.enqueue([(p, None) for p in res_pieces(u)], slot)
    pools = {"a": act, "w": wgt, "b": bia}

    def act_range_of(c0: int) -> int:
        for i, (a0, a1) in enumerate(plan.act_ranges):
            if a0 <= c0 < a1:
                return i
        raise AssertionError(c0)

    # The full step list: (band, group, tile start pixel, chunk).
    steps: list[tuple[int, int, int, int]] = []
    for b in range(len(plan.bands)):
        tiles = plan.tiles(b, R)
        for g in range(plan.groups):
            for p0 in tiles:
                for k in range(len(plan.chunks)):
                    steps.append((b, g, p0, k))

    def keys_of(st: tuple[int, int, int, int]) -> tuple[tuple, tuple, tuple]:
        b, g, _, k = st
        return (("a", b, act_range_of(plan.chunks[k][0])), ("w", g, k), ("b", g))

    uses: dict[tuple, list[int]] = {}
    events: list[tuple[int, tuple]] = []
    prev: tuple | None = None
    for i, st in enumerate(steps):
        ks = keys_of(st)
        for j, key in enumerate(ks):
            uses.setdefault(key, []).append(i)
            if prev is None or prev[j] != key:
                events.append((i, key))
        prev = ks

    def next_use(key: Hashable | None, after: int) -> int:
        if key is None:
            return 1 << 61  # a free slot is the best victim
        lst = uses.get(key, [])
        j = bisect.bisect_right(lst, after)
        return lst[j] if j < len(lst) else 1 << 60

    fc0, fc1, fk0, fk1 = plan.chunks[0]
    tile_cycles = max(1, (fc1 - fc0) * (fk1 - fk0) * plan.KW)
    prefetch_piece = max(4 * cfg.mem_latency, tile_cycles - cfg.mem_latency - 8)

    def load_pieces(key: tuple, slot: Slot, piece: int) -> list[tuple[Insn, int | None]]:
        kind = key[0]
        if kind == "a":
            # Row pieces (every channel of the range), tagged with the first row not covered,
            # so a tile waits only for the input rows it reads.
            _, b, ai = key
            a0, a1 = plan.act_ranges[ai]
            lo, hi = plan.band_in[b]
            row_w = x.pitch // B
            per = max(1, piece // max(1, row_w * (a1 - a0)))
            if hi - lo <= per:
                per = hi - lo
            out: list[tuple[Insn, int | None]] = []
            for r0 in range(lo, hi, max(1, per)):
                r1 = min(hi, r0 + per)
                for insn in dma_pieces(Opcode.LOAD, Buf.ACT,
                                       (x.addr + a0 * x.plane + r0 * x.pitch) // B,
                                       (slot.base + (r0 - lo) * x.pitch) // B,
                                       (r1 - r0) * row_w, a1 - a0, x.plane // B,
                                       plan.a_plane // B, MAX_WORDS):
                    out.append((insn, r1))
            return out
        if kind == "w":
            _, g, k = key
            # contiguous: k0:k1 is partial only if c1-c0==1
            row0, nrows = plan.wgt_rows(g, k)
            return [(i, None) for i in dma_pieces(
                Opcode.LOAD, Buf.WGT, w_addr // B + row0 * wrow_w, slot.base * wrow_w,
                nrows * wrow_w, 1, 0, 0, piece)]
        _, g = key
        return [(i, None) for i in dma_pieces(
            Opcode.LOAD, Buf.BIAS, b_addr // B + g * brow_w, slot.base * brow_w, brow_w, 1, 0,
            0, piece)]

    def pick_victim(pool: _Pool, i: int, need_at: int, busy: set[int],
                    prefetch: bool) -> Slot | None:
        best, best_use = None, -2
        for s in pool.slots:
            if id(s) in busy or s.queued:
                continue
            if prefetch and s.last_compute > em.comp_synced:
                continue
            nu = next_use(s.key, i)
            if nu <= need_at and s.key is not None:
                continue
            if nu > best_use:
                best, best_use = s, nu
        return best

    def demand(key: tuple, i: int, busy: set[int], tag: int | None) -> tuple[Slot, int]:
        """The slot holding ``key``, loading it now if needed; and the DMA index to wait for
        (only the pieces below ``tag`` for tagged resources)."""
        pool = pools[key[0]]
        slot = pool.find(key)
        if slot is None:
            slot = pick_victim(pool, i, i, busy, prefetch=False)
            assert slot is not None, "no slot available"
            slot.assign(key)
            # ACT comes in row pieces (a tile waits only for its rows); the rest in one go.
            pieces = load_pieces(key, slot, prefetch_piece if key[0] == "a" else MAX_WORDS)
            n_now = len(pieces)
            if tag is not None:
                n_now = next((j + 1 for j, (_, t) in enumerate(pieces)
                              if t is not None and t >= tag), len(pieces))
            now = pieces[:n_now]
            for insn, t in now:
                em.emit_dma(insn, slot, t)
            rest = pieces[len(now):]
            if rest:
                em.enqueue(rest, slot, front=True)
        return slot, em.ready(slot, tag)

    ev_ptr = 0

    def prefetch(i: int) -> None:
        nonlocal ev_ptr
        while ev_ptr < len(events) and events[ev_ptr][0] <= i:
            ev_ptr += 1
        if em.queue:
            return
        for j, key in events[ev_ptr: ev_ptr + PREFETCH_LOOKAHEAD]:
            pool = pools[key[0]]
            if pool.find(key) is not None:
                continue
            slot = pick_victim(pool, i, j, set(), prefetch=True)
            if slot is None:
                continue  # a later resource may still have a free slot
            slot.assign(key)
            pieces = load_pieces(key, slot, prefetch_piece)
            if pieces:
                em.enqueue(pieces, slot)
            return

    def store_unit(u: int) -> None:
        b, g = divmod(u, plan.groups)
        oy0, oy1 = plan.bands[b]
        slot = outs[u % plan.n_out]
        ncols = min(NC, plan.O - g * NC)
        pieces = dma_pieces(Opcode.STORE, Buf.OUT,
                            (y.addr + g * NC * y.plane + oy0 * y.pitch) // B, slot.base // B,
                            (oy1 - oy0) * y.pitch // B, ncols, y.plane // B, obank_w,
                            max(prefetch_piece, (oy1 - oy0) * y.pitch // B))
        em.enqueue([(p, None) for p in pieces], slot, front=True)

    # ---- layer registers ----
    a_wrap = plan.sy * x.pitch - (plan.OW - 1) * plan.sx
    o_wrap = y.pitch - (plan.OW - 1)
    for reg, val in ((Reg.IN_H, plan.H), (Reg.IN_W, plan.W), (Reg.A_PITCH, x.pitch),
                     (Reg.A_PLANE, plan.a_plane), (Reg.A_WRAP, a_wrap), (Reg.OUT_W, plan.OW),
                     (Reg.STRIDE_Y, plan.sy), (Reg.STRIDE_X, plan.sx), (Reg.PAD_L, pl),
                     (Reg.KH, plan.KH), (Reg.KW, plan.KW), (Reg.O_WRAP, o_wrap),
                     (Reg.MODE, int(Mode.MAC)), (Reg.FLAGS, (int(Flag.RELU) if op.relu else 0)
                                  | (int(Flag.RESIDUAL) if res is not None else 0)),
                     (Reg.WFMT, WFMT_RAW if plan.fmt is None else WFMT_CODEBOOK)):
        em.set(reg, val, force=True)
    em.regs.pop(int(Reg.NCH), None)
    first_insn = len(em.insns)
    cb_slot: Slot | None = None
    if plan.fmt is not None:
        # The codebook: registers, SYNC COMPUTE (it is not double-buffered), LOAD CB.
        fmt = plan.fmt
        for reg, val in ((Reg.CB_D, fmt.d), (Reg.CB_K, fmt.k), (Reg.IDX_BITS, fmt.index_bits),
                         (Reg.IDX_PER_ROW, plan.idx_per_row)):
            em.set(reg, val, force=True)
        em.insns.append(Insn(Opcode.SYNC, {"mask": int(SyncMask.COMPUTE)}))
        em.comp_synced = em.comp_n
        cb_slot = Slot("CB", 0, 0, fmt.k * fmt.d)
        cb_slot.assign("cb")
        assert cb_addr is not None
        em.emit_dma(Insn(Opcode.LOAD, {
            "buf": int(Buf.CB), "ext_addr": cb_addr // B, "buf_addr": 0,
            "words": -(-fmt.k * fmt.d // B), "runs": 1, "ext_stride": 0, "buf_stride": 0}),
            cb_slot)

    cur_unit = -1
    n_compute = 0
    for i, st in enumerate(steps):
        b, g, p0, k = st
        u = b * plan.groups + g
        ka, kw, kb = keys_of(st)
        oy0, oy1 = plan.bands[b]
        lo, hi = plan.band_in[b]
        npix = min(R, oy1 * plan.OW - p0)
        oy, ox = divmod(p0, plan.OW)
        oy_last = (p0 + npix - 1) // plan.OW
        row_tag = min(hi, max(lo + 1, oy_last * plan.sy - pt + plan.KH))
        busy: set[int] = set()
        sa, na = demand(ka, i, busy, row_tag)
        busy.add(id(sa))
        sw, nw = demand(kw, i, busy, None)
        busy.add(id(sw))
        sb, nb = demand(kb, i, busy, None)
        so = outs[u % plan.n_out]
        if u != cur_unit:
            if cur_unit >= 0:
                em.sync(int(SyncMask.COMPUTE) | em.compute_mask([na, nw, nb]))
                store_unit(cur_unit)
            cur_unit = u
            res_prefetch(u + 1)
        no = em.ready(so)
        slots, needs = [sa, sw, sb, so], [na, nw, nb, no]
        if cb_slot is not None:
            slots.append(cb_slot)
            needs.append(cb_slot.last_dma)
        if res is not None:
            slots.append(ress[u % plan.n_out])
            needs.append(res_ready(u))
        c0, c1, k0, k1 = plan.chunks[k]
        a0, _ = plan.act_ranges[ka[2]]
        iy0, ix0 = oy * plan.sy - pt + k0, ox * plan.sx - pl
        em.set(Reg.NCH, c1 - c0)
        em.set(Reg.KH, k1 - k0)
        insn = Insn(Opcode.COMPUTE, {
            "clear": int(k == 0), "drain": int(k == len(plan.chunks) - 1), "ox0": ox,
            "iy0": iy0, "ix0": ix0, "npix": npix, "col0": 0,
            "ncols": min(NC, plan.O - g * NC),
            "act_base": sa.base + (c0 - a0) * plan.a_plane + (iy0 - lo) * x.pitch + ix0,
            "o_off": so.base + (oy - oy0) * y.pitch + ox,
            "wgt_base": sw.base, "bias_row": sb.base,
        })
        em.emit_compute(insn, slots, needs)
        n_compute += 1
        # Feed the DMA unit for at most as long as this COMPUTE runs (at least one piece):
        # the controller waits for each piece before issuing the next, and the next round's
        # SYNC DMA waits for the last one, so more would delay the next COMPUTE.
        budget = (c1 - c0) * (k1 - k0) * plan.KW
        spent = 0
        while True:
            if not em.queue:
                prefetch(i)
                if not em.queue:
                    break
            dur = _dma_cycles(em.queue[0][0], cfg)
            if spent and spent + dur > budget:
                break
            spent += dur
            em.pop()
    em.sync(int(SyncMask.COMPUTE))
    store_unit(cur_unit)
    em.flush()
    em.sync_all()
    em.insns.append(Insn(Opcode.MARK, {"id": layer_index}))
    read = {Buf.WGT: 0, Buf.CB: 0}
    for insn in em.insns[first_insn:]:
        if insn.op == Opcode.LOAD and insn.args["buf"] in read:
            read[Buf(insn.args["buf"])] += insn.args["words"] * insn.args["runs"] * B
    # Weight bytes the layer reads from external memory (index/raw rows + codebook).
    return {"computes": n_compute, "weight_bytes_read": read[Buf.WGT] + read[Buf.CB],
            "codebook_bytes_read": read[Buf.CB]}
