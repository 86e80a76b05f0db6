"""Tiling and scheduling of one pooling layer (``MaxPool2d``: MODE=MAX, ``SumPool2d``:
MODE=SUM).

Pooling is per channel, so every COMPUTE reduces ONE input channel (``NCH = 1``, ``act_base``
at that channel's plane) over the window and drains one column: output channel ``c`` is
computed into OUT bank ``c mod cols`` (``col0 = c mod cols``, ``ncols = 1``); every column of
the array computes the same value, only that one is kept. One BIAS row (bias 0, shift 0 for
MAX or the sum pool's shift for SUM, in every column) serves the whole layer; no weights are
loaded (MAX and SUM read no WGT).

Tiling follows the convolutions': channels in *groups* of ``cols`` (one OUT bank each),
output rows in *bands* that fit half of OUT (double buffer), a band's input rows loaded into
ACT (split into channel ranges when one group's band does not fit half of ACT), output pixels
of a band in raster tiles of ``rows`` pixels. Loop order: band, group, channel range, tile,
channel. ACT alternates two slots (the next range loads while this one computes) and OUT two
slots (group g+1 computes while group g is stored).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from shiftbook import numerics as nx
from shiftbook.config import CoreConfig
from shiftbook.isa import WFMT_RAW, Buf, Insn, Mode, Opcode, Reg, SyncMask
from shiftbook.placement import Placement
from shiftbook.sw.compiler.dma import MAX_WORDS, dma_pieces, feed_dma
from shiftbook.sw.compiler.emitter import Emitter, Slot
from shiftbook.sw.compiler.tiling import CompileError, input_bands, out_band_limit, round_up
from shiftbook.sw.ir import MaxPool2d, SumPool2d

__all__ = ["PoolPlan", "plan_pool", "pool_bias_bytes", "schedule_pool", "pool_layer_meta"]

PoolOp = MaxPool2d | SumPool2d


@dataclass
class PoolPlan:
    name: str
    mode: Mode
    C: int
    H: int
    W: int
    KH: int
    KW: int
    sy: int
    sx: int
    pad: tuple[int, int, int, int]
    OH: int
    OW: int
    groups: int
    bands: list[tuple[int, int]]         # output rows [oy0, oy1)
    band_in: list[tuple[int, int]]       # input rows [iy_lo, iy_hi) held in ACT
    ranges: list[tuple[int, int]]        # channel ranges (within a group) per ACT load
    a_plane: int
    act_slot_bytes: int
    n_act: int
    out_slot_bytes: int
    n_out: int

    def tiles(self, band: int, rows: int) -> list[int]:
        oy0, oy1 = self.bands[band]
        return list(range(oy0 * self.OW, oy1 * self.OW, rows))

    def group_ranges(self, g: int, cols: int) -> list[tuple[int, int]]:
        """Absolute channel ranges of group ``g``, one ACT load each."""
        lo, hi = g * cols, min(self.C, (g + 1) * cols)
        return [(lo + a, min(hi, lo + b)) for a, b in self.ranges if lo + a < hi]


def plan_pool(op: PoolOp, x: Placement, y: Placement, cfg: CoreConfig) -> PoolPlan:
    """Tile a pooling layer for ``cfg`` (refused with one line if it cannot be mapped)."""
    C, H, W = x.shape
    _, OH, OW = y.shape
    KH, KW = op.kernel
    sy, sx = op.stride
    pt, pl, pb, pr = op.padding
    B = cfg.bus_bytes
    mode = Mode.MAX if isinstance(op, MaxPool2d) else Mode.SUM
    if mode == Mode.SUM:
        lo, hi = nx.int_range(cfg.acc_bits)
        if KH * KW * (-nx.ACT_MIN) > -lo or KH * KW * nx.ACT_MAX > hi:
            raise CompileError(f"layer {op.name!r}: a {KH}x{KW} sum may overflow the "
                               f"{cfg.acc_bits}-bit accumulator")
        if op.shift > cfg.acc_bits:
            raise CompileError(f"layer {op.name!r}: shift {op.shift} exceeds "
                               f"acc_bits={cfg.acc_bits}")
    groups = -(-C // cfg.cols)
    gch = min(C, cfg.cols)

    n_out, bo_max = out_band_limit(op.name, y, cfg)

    def in_rows(bo: int) -> int:
        return min(H, (bo - 1) * sy + KH)

    half = cfg.abuf_bytes // 2
    bo = min(OH, bo_max)
    while bo > 1 and gch * in_rows(bo) * x.pitch > half:
        bo -= 1
    bands = [(o0, min(OH, o0 + bo)) for o0 in range(0, OH, bo)]
    band_in = input_bands(bands, H, KH, sy, pt)
    max_rows = max(1, max(b - a for a, b in band_in))
    a_plane = max_rows * x.pitch
    per = half // a_plane or cfg.abuf_bytes // a_plane
    if per == 0:
        raise CompileError(f"layer {op.name!r}: {max_rows} input rows of {x.pitch} bytes do "
                           f"not fit the {cfg.abuf_bytes}-byte activation buffer")
    per = min(per, gch)
    ranges = [(c0, min(gch, c0 + per)) for c0 in range(0, gch, per)]
    act_slot = round_up(per * a_plane, B)
    n_act = max(1, min(2, cfg.abuf_bytes // act_slot))
    out_slot = round_up(bo * y.pitch, B)
    return PoolPlan(op.name, mode, C, H, W, KH, KW, sy, sx, (pt, pl, pb, pr), OH, OW, groups,
                    bands, band_in, ranges, a_plane, act_slot, n_act, out_slot, n_out)


def pool_bias_bytes(op: PoolOp, cfg: CoreConfig) -> bytes:
    """The layer's one BIAS row: bias 0, shift (0 for MAX), res_shift 0 in every column."""
    shift = int(op.shift) if isinstance(op, SumPool2d) else 0
    row = bytearray(cfg.bbuf_row_bytes)
    for j in range(cfg.cols):
        row[8 * j + 4] = shift
    return bytes(row)


def _set_pool_registers(em: Emitter, plan: PoolPlan, x: Placement, y: Placement) -> None:
    """The layer registers of a pooling layer (every one written, NCH = 1)."""
    _, pl, _, _ = plan.pad
    a_wrap = plan.sy * x.pitch - (plan.OW - 1) * plan.sx
    o_wrap = y.pitch - (plan.OW - 1)
    for reg, val in ((Reg.IN_H, plan.H), (Reg.IN_W, plan.W), (Reg.A_PITCH, x.pitch),
                     (Reg.A_PLANE, plan.a_plane), (Reg.A_WRAP, a_wrap), (Reg.OUT_W, plan.OW),
                     (Reg.STRIDE_Y, plan.sy), (Reg.STRIDE_X, plan.sx), (Reg.PAD_L, pl),
                     (Reg.KH, plan.KH), (Reg.KW, plan.KW), (Reg.O_WRAP, o_wrap),
                     (Reg.NCH, 1), (Reg.MODE, int(plan.mode)), (Reg.FLAGS, 0),
                     (Reg.WFMT, WFMT_RAW)):
        em.set(reg, val, force=True)


def _emit_pool_computes(em: Emitter, plan: PoolPlan, cfg: CoreConfig, x: Placement,
                        y: Placement, b: int, chans: tuple[int, int], slots: list[Slot],
                        needs: list[int]) -> int:
    """The COMPUTEs of one ACT load (band ``b``, channels ``chans``; ``slots`` = ACT, OUT,
    BIAS): per tile, one per channel, each followed by DMA pieces for about as long as it
    runs. Returns how many."""
    R, NC = cfg.rows, cfg.cols
    pt, pl, _, _ = plan.pad
    sa, so, _ = slots
    c0, c1 = chans
    oy0, oy1 = plan.bands[b]
    lo, _ = plan.band_in[b]
    n = 0
    for p0 in plan.tiles(b, R):
        npix = min(R, oy1 * plan.OW - p0)
        oy, ox = divmod(p0, plan.OW)
        iy0, ix0 = oy * plan.sy - pt, ox * plan.sx - pl
        for c in range(c0, c1):
            insn = Insn(Opcode.COMPUTE, {
                "clear": 1, "drain": 1, "ox0": ox, "iy0": iy0, "ix0": ix0, "npix": npix,
                "col0": c % NC, "ncols": 1,
                "act_base": sa.base + (c - c0) * plan.a_plane + (iy0 - lo) * x.pitch + ix0,
                "o_off": so.base + (oy - oy0) * y.pitch + ox,
                "wgt_base": 0, "bias_row": 0,
            })
            em.emit_compute(insn, slots, needs)
            n += 1
            feed_dma(em, cfg, plan.KH * plan.KW)
    return n


def schedule_pool(em: Emitter, op: PoolOp, plan: PoolPlan, cfg: CoreConfig, x: Placement,
                  y: Placement, b_addr: int, layer_index: int) -> dict[str, Any]:
    """Emit one pooling layer's instructions (ending with ``SYNC ALL; MARK layer_index``)."""
    B = cfg.bus_bytes
    NC = cfg.cols
    brow_w = cfg.bbuf_row_bytes // B
    obank_w = cfg.obuf_bytes // B

    acts = [Slot("ACT", i, i * plan.act_slot_bytes, plan.act_slot_bytes)
            for i in range(plan.n_act)]
    outs = [Slot("OUT", i, i * plan.out_slot_bytes, plan.out_slot_bytes)
            for i in range(plan.n_out)]
    bias = Slot("BIAS", 0, 0, 1)

    _set_pool_registers(em, plan, x, y)

    # The bias row: once for the whole layer.
    bias.assign("bias")
    for insn in dma_pieces(Opcode.LOAD, Buf.BIAS, b_addr // B, 0, brow_w, 1, 0, 0, MAX_WORDS):
        em.emit_dma(insn, bias)

    # ACT loads: (band, group, range) in loop order.
    loads: list[tuple[int, int, int, int]] = []
    for b in range(len(plan.bands)):
        for g in range(plan.groups):
            for c0, c1 in plan.group_ranges(g, NC):
                loads.append((b, g, c0, c1))

    def act_pieces(i: int, slot: Slot) -> list[tuple[Insn, int | None]]:
        b, _, c0, c1 = loads[i]
        lo, hi = plan.band_in[b]
        return [(p, None) for p in dma_pieces(
            Opcode.LOAD, Buf.ACT, (x.addr + c0 * x.plane + lo * x.pitch) // B, slot.base // B,
            (hi - lo) * x.pitch // B, c1 - c0, x.plane // B, plan.a_plane // B, MAX_WORDS)]

    def ensure(i: int, *, prefetch: bool) -> None:
        if i >= len(loads):
            return
        slot = acts[i % plan.n_act]
        if slot.key == i:
            return
        if prefetch and (plan.n_act < 2 or slot.last_compute > em.comp_synced):
            return
        slot.assign(i)
        em.enqueue(act_pieces(i, slot), slot, front=not prefetch)

    def store_unit(b: int, g: int, u: int) -> None:
        oy0, oy1 = plan.bands[b]
        slot = outs[u % plan.n_out]
        ncols = min(NC, plan.C - g * NC)
        pieces = dma_pieces(Opcode.STORE, Buf.OUT,
                            (y.addr + g * NC * y.plane + oy0 * y.pitch) // B, slot.base // B,
                            (oy1 - oy0) * y.pitch // B, ncols, y.plane // B, obank_w,
                            MAX_WORDS)
        em.enqueue([(p, None) for p in pieces], slot, front=True)

    cur: tuple[int, int, int] | None = None   # (band, group, unit) being computed
    n_compute = 0
    for i, (b, g, c0, c1) in enumerate(loads):
        u = b * plan.groups + g
        sa = acts[i % plan.n_act]
        ensure(i, prefetch=False)
        na = em.ready(sa)
        if cur is not None and cur[2] != u:
            em.sync(int(SyncMask.COMPUTE) | em.compute_mask([na]))
            store_unit(*cur)
        cur = (b, g, u)
        ensure(i + 1, prefetch=True)
        so = outs[u % plan.n_out]
        no = em.ready(so)
        nb = em.ready(bias)
        n_compute += _emit_pool_computes(em, plan, cfg, x, y, b, (c0, c1), [sa, so, bias],
                                         [na, no, nb])
    em.sync(int(SyncMask.COMPUTE))
    assert cur is not None
    store_unit(*cur)
    em.flush()
    em.sync_all()
    em.insns.append(Insn(Opcode.MARK, {"id": layer_index}))
    return {"computes": n_compute, "weight_bytes_read": 0, "codebook_bytes_read": 0}


def pool_layer_meta(index: int, op: PoolOp, plan: PoolPlan, cfg: CoreConfig, macs: int,
                    b_addr: int, b_bytes: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Bundle metadata of a pooling layer (the keys of a convolution's, no weights).

    ``ideal_cycles``: one window position of ``rows`` pixels per cycle (a pooling COMPUTE
    keeps one column), ``ceil(macs / rows)``."""
    return {
        "index": index, "name": op.name, "op": op.kind, "input": op.input, "output": op.output,
        "residual": None, "out_channels": plan.C, "in_channels": plan.C,
        "macs": macs, "ideal_cycles": math.ceil(macs / cfg.rows),
        "weight_bytes": 0, "weight_addr": 0, "bias_addr": b_addr, "bias_bytes": b_bytes,
        "kernel": [plan.KH, plan.KW], "stride": [plan.sy, plan.sx], "padding": list(plan.pad),
        "mode": plan.mode.name, "shift": int(getattr(op, "shift", 0)),
        "tiles": {
            "rows": cfg.rows, "cols": cfg.cols, "groups": plan.groups,
            "bands": [list(b) for b in plan.bands],
            "chunks": [[c0, c1, 0, plan.KH] for c0, c1 in plan.ranges],
            "out_w": plan.OW,
        },
        "weights": {"wfmt": WFMT_RAW, "k": None, "d": None, "index_bits": None,
                    "layout": None, "codebook_addr": None, "codebook_bytes": 0,
                    "footprint": None},
        **extra,
    }

