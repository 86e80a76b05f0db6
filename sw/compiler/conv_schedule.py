"""Scheduling of one tiled convolution (a :class:`~shiftbook.sw.compiler.conv_plan.ConvPlan`)
into instructions.

Loop order: group block, band, group, tile, chunk (one block of all groups unless the plan
has several, ``ConvPlan.group_block``; the bands run forwards in even blocks and backwards in
odd ones, so the band in ACT at a block's end is the next block's first). ACT, WGT and BIAS are
cut into equal slots (a :class:`SlotPool` each); a resource (band x channel range, group x
chunk, group) is loaded into a slot on demand or prefetched while earlier tiles compute, the
victim chosen by furthest next use (the whole schedule is known): a block whose weights fit
the WGT slots loads each of them once. An output *unit* is one (band, group), numbered in
schedule order; OUT alternates two slots: unit u+1 computes while unit u is stored; with a
residual, RES alternates two slots at the same offsets, loaded one output unit ahead.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable
from typing import Any

from shiftbook.config import CoreConfig
from shiftbook.isa import WFMT_CODEBOOK, WFMT_RAW, Buf, Flag, Insn, Mode, Opcode, Reg, SyncMask
from shiftbook.placement import Placement
from shiftbook.sw.compiler.conv_plan import ConvPlan
from shiftbook.sw.compiler.dma import MAX_WORDS, dma_pieces, feed_dma
from shiftbook.sw.compiler.emitter import Emitter, Slot
from shiftbook.sw.ir import Conv2d

__all__ = ["SlotPool", "ConvScheduler", "schedule_conv", "layer_registers"]

PREFETCH_LOOKAHEAD = 32     # resource changes ahead that a prefetch may load
Step = tuple[int, int, int, int]        # (band, group, tile start pixel, chunk)
Key = tuple                             # ("a", band, act range) | ("w", group, chunk) | ("b", g)
Pieces = list[tuple[Insn, int | None]]  # DMA pieces with their progress tags


class SlotPool:
    """The equal slots one buffer (ACT, WGT or BIAS) is cut into, each holding one resource."""

    def __init__(self, buf: str, n: int, size: int) -> None:
        self.slots = [Slot(buf, i, i * size, size) for i in range(n)]

    def find(self, key: Hashable) -> Slot | None:
        """The slot holding ``key``, if any."""
        for s in self.slots:
            if s.key == key:
                return s
        return None


class ConvScheduler:
    """Emits one convolution's instructions into an :class:`Emitter` (:meth:`run`)."""

    def __init__(self, em: Emitter, op: Conv2d, plan: ConvPlan, cfg: CoreConfig,
                 x: Placement, y: Placement, w_addr: int, b_addr: int, layer_index: int,
                 res: Placement | None = None, cb_addr: int | None = None) -> None:
        self.em, self.op, self.plan, self.cfg = em, op, plan, cfg
        self.x, self.y, self.res = x, y, res
        self.w_addr, self.b_addr, self.cb_addr = w_addr, b_addr, cb_addr
        self.layer_index = layer_index
        B = cfg.bus_bytes
        self.B = B
        self.obank_w = cfg.obuf_bytes // B
        self.pools = {"a": SlotPool("ACT", plan.n_act, plan.act_slot_bytes),
                      "w": SlotPool("WGT", plan.n_wgt, plan.wgt_slot_rows),
                      "b": SlotPool("BIAS", plan.n_bias, 1)}
        self.outs = [Slot("OUT", i, i * plan.out_slot_bytes, plan.out_slot_bytes)
                     for i in range(plan.n_out)]
        self.ress = [Slot("RES", i, i * plan.out_slot_bytes, plan.out_slot_bytes)
                     for i in range(plan.n_out)]
        self.n_units = len(plan.bands) * plan.groups
        # Output units (band, group) in schedule order, and each one's number.
        self.units = [(b, g) for blk, (g0, g1) in enumerate(plan.group_blocks)
                      for b in self._band_order(blk) for g in range(g0, g1)]
        self.unit_of = {bg: u for u, bg in enumerate(self.units)}
        self.steps = self._all_steps()
        self.uses, self.events = self._uses_and_events()
        self.ev_ptr = 0
        fc0, fc1, fk0, fk1 = plan.chunks[0]
        tile_cycles = max(1, (fc1 - fc0) * (fk1 - fk0) * plan.KW)
        self.prefetch_piece = max(4 * cfg.mem_latency, tile_cycles - cfg.mem_latency - 8)

    # ---- the schedule's resources ----
    def _band_order(self, block: int) -> range:
        """The bands of group block ``block`` in schedule order (odd blocks backwards)."""
        n = len(self.plan.bands)
        return range(n - 1, -1, -1) if block % 2 else range(n)

    def _all_steps(self) -> list[Step]:
        """Every (band, group, tile start pixel, chunk) in loop order (the units' order)."""
        plan, steps = self.plan, []
        for b, g in self.units:
            for p0 in plan.tiles(b, self.cfg.rows):
                for k in range(len(plan.chunks)):
                    steps.append((b, g, p0, k))
        return steps

    def act_range_of(self, c0: int) -> int:
        for i, (a0, a1) in enumerate(self.plan.act_ranges):
            if a0 <= c0 < a1:
                return i
        raise AssertionError(c0)

    def keys_of(self, st: Step) -> tuple[Key, Key, Key]:
        """The ACT, WGT and BIAS resources step ``st`` reads."""
        b, g, _, k = st
        return (("a", b, self.act_range_of(self.plan.chunks[k][0])), ("w", g, k), ("b", g))

    def _uses_and_events(self) -> tuple[dict[Key, list[int]], list[tuple[int, Key]]]:
        """Per resource the steps that read it, and the (step, resource) where a buffer's
        resource changes from the previous step's (what a prefetch loads)."""
        uses: dict[Key, list[int]] = {}
        events: list[tuple[int, Key]] = []
        prev: tuple | None = None
        for i, st in enumerate(self.steps):
            ks = self.keys_of(st)
            for j, key in enumerate(ks):
                uses.setdefault(key, []).append(i)
                if prev is None or prev[j] != key:
                    events.append((i, key))
            prev = ks
        return uses, events

    def next_use(self, key: Hashable | None, after: int) -> int:
        if key is None:
            return 1 << 61  # a free slot is the best victim
        lst = self.uses.get(key, [])
        j = bisect.bisect_right(lst, after)
        return lst[j] if j < len(lst) else 1 << 60

    # ---- DMA pieces ----
    def _act_pieces(self, key: Key, slot: Slot, piece: int) -> Pieces:
        """Row pieces (every channel of the range), tagged with the first row not covered,
        so a tile waits only for the input rows it reads."""
        plan, x, B = self.plan, self.x, self.B
        _, b, ai = key
        a0, a1 = plan.act_ranges[ai]
        lo, hi = plan.band_in[b]
        row_w = x.pitch // B
        per = max(1, piece // max(1, row_w * (a1 - a0)))
        if hi - lo <= per:
            per = hi - lo
        out: Pieces = []
        for r0 in range(lo, hi, max(1, per)):
            r1 = min(hi, r0 + per)
            for insn in dma_pieces(Opcode.LOAD, Buf.ACT,
                                   (x.addr + a0 * x.plane + r0 * x.pitch) // B,
                                   (slot.base + (r0 - lo) * x.pitch) // B,
                                   (r1 - r0) * row_w, a1 - a0, x.plane // B,
                                   plan.a_plane // B, MAX_WORDS):
                out.append((insn, r1))
        return out

    def load_pieces(self, key: Key, slot: Slot, piece: int) -> Pieces:
        """The LOAD pieces that bring resource ``key`` into ``slot``."""
        B, cfg = self.B, self.cfg
        kind = key[0]
        if kind == "a":
            return self._act_pieces(key, slot, piece)
        if kind == "w":
            _, g, k = key
            wrow_w = cfg.wbuf_row_bytes // B
            # contiguous: k0:k1 is partial only if c1-c0==1
            row0, nrows = self.plan.wgt_rows(g, k)
            return [(i, None) for i in dma_pieces(
                Opcode.LOAD, Buf.WGT, self.w_addr // B + row0 * wrow_w, slot.base * wrow_w,
                nrows * wrow_w, 1, 0, 0, piece)]
        _, g = key
        brow_w = cfg.bbuf_row_bytes // B
        return [(i, None) for i in dma_pieces(
            Opcode.LOAD, Buf.BIAS, self.b_addr // B + g * brow_w, slot.base * brow_w, brow_w, 1,
            0, 0, piece)]

    def res_pieces(self, u: int) -> list[Insn]:
        """The LOAD pieces of output unit ``u``'s residual band into its RES slot."""
        res, plan, B = self.res, self.plan, self.B
        assert res is not None
        NC = self.cfg.cols
        b, g = self.units[u]
        oy0, oy1 = plan.bands[b]
        return dma_pieces(Opcode.LOAD, Buf.RES,
                          (res.addr + g * NC * res.plane + oy0 * res.pitch) // B,
                          self.ress[u % plan.n_out].base // B, (oy1 - oy0) * res.pitch // B,
                          min(NC, plan.O - g * NC), res.plane // B, self.obank_w, MAX_WORDS)

    # ---- loading ----
    def res_ready(self, u: int) -> int:
        """Load unit u's residual now unless queued or loaded; the DMA index to wait for."""
        slot = self.ress[u % self.plan.n_out]
        if slot.key != u:
            slot.assign(u)
            for insn in self.res_pieces(u):
                self.em.emit_dma(insn, slot)
        return self.em.ready(slot)

    def res_prefetch(self, u: int) -> None:
        if self.res is None or u >= self.n_units or self.plan.n_out < 2:
            return  # (one OUT slot: unit u+1's RES slot is unit u's)
        slot = self.ress[u % self.plan.n_out]
        if slot.key != u and slot.last_compute <= self.em.comp_synced:
            slot.assign(u)
            self.em.enqueue([(p, None) for p in self.res_pieces(u)], slot)

    def pick_victim(self, pool: SlotPool, i: int, need_at: int, busy: set[int],
                    prefetch: bool, live_ok: bool = True) -> Slot | None:
        """The slot to load a resource needed at step ``need_at`` into (at step ``i``): the
        one whose resource is used again furthest ahead, never one used by then; for a
        prefetch only slots no unsynced COMPUTE reads, and with ``live_ok`` False only free
        slots or slots whose resource is not used again."""
        best, best_use = None, -2
        for s in pool.slots:
            if id(s) in busy or s.queued:
                continue
            if prefetch and s.last_compute > self.em.comp_synced:
                continue
            nu = self.next_use(s.key, i)
            if nu <= need_at and s.key is not None:
                continue
            if not live_ok and nu < 1 << 60:
                continue
            if nu > best_use:
                best, best_use = s, nu
        return best

    def demand(self, key: Key, i: int, busy: set[int], tag: int | None) -> tuple[Slot, int]:
        """The slot holding ``key``, loading it now if needed; and the DMA index to wait for
        (only the pieces below ``tag`` for tagged resources)."""
        em = self.em
        pool = self.pools[key[0]]
        slot = pool.find(key)
        if slot is None:
            slot = self.pick_victim(pool, i, i, busy, prefetch=False)
            assert slot is not None, "no slot available"
            slot.assign(key)
            # ACT comes in row pieces (a tile waits only for its rows); the rest in one go.
            pieces = self.load_pieces(key, slot,
                                      self.prefetch_piece if key[0] == "a" else MAX_WORDS)
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

    def prefetch(self, i: int) -> None:
        """Queue the next resource of the coming steps that is not loaded (if a slot is free
        of unsynced COMPUTEs) while the DMA queue is empty. Only a buffer's next resource may
        evict one that is used again: loaded further ahead, it would evict by what is known
        now a resource that later turns out to be needed before the one evicted next (one
        extra load each time, every weight read twice in two bands of seven WGT slots for
        eight groups)."""
        events = self.events
        while self.ev_ptr < len(events) and events[self.ev_ptr][0] <= i:
            self.ev_ptr += 1
        if self.em.queue:
            return
        seen: set[str] = set()
        for j, key in events[self.ev_ptr: self.ev_ptr + PREFETCH_LOOKAHEAD]:
            pool = self.pools[key[0]]
            first = key[0] not in seen
            seen.add(key[0])
            if pool.find(key) is not None:
                continue
            slot = self.pick_victim(pool, i, j, set(), prefetch=True, live_ok=first)
            if slot is None:
                continue  # a later resource may still have a free slot
            slot.assign(key)
            pieces = self.load_pieces(key, slot, self.prefetch_piece)
            if pieces:
                self.em.enqueue(pieces, slot)
            return

    def store_unit(self, u: int) -> None:
        """Queue (at the front) the STORE of output unit ``u``'s band from its OUT slot."""
        plan, y, B, NC = self.plan, self.y, self.B, self.cfg.cols
        b, g = self.units[u]
        oy0, oy1 = plan.bands[b]
        slot = self.outs[u % plan.n_out]
        ncols = min(NC, plan.O - g * NC)
        pieces = dma_pieces(Opcode.STORE, Buf.OUT,
                            (y.addr + g * NC * y.plane + oy0 * y.pitch) // B, slot.base // B,
                            (oy1 - oy0) * y.pitch // B, ncols, y.plane // B, self.obank_w,
                            max(self.prefetch_piece, (oy1 - oy0) * y.pitch // B))
        self.em.enqueue([(p, None) for p in pieces], slot, front=True)

    # ---- the layer ----
    def set_layer_registers(self) -> None:
        for reg, val in layer_registers(self.op, self.plan, self.x, self.y, self.res):
            self.em.set(reg, val, force=True)
        self.em.regs.pop(int(Reg.NCH), None)

    def load_codebook(self) -> Slot:
        """A codebook layer's registers, SYNC COMPUTE (the codebook is not double-buffered)
        and LOAD CB; the CB slot."""
        em, fmt, B = self.em, self.plan.fmt, self.B
        assert fmt is not None and self.cb_addr is not None
        for reg, val in ((Reg.CB_D, fmt.d), (Reg.CB_K, fmt.k), (Reg.IDX_BITS, fmt.index_bits),
                         (Reg.IDX_PER_ROW, self.plan.idx_per_row)):
            em.set(reg, val, force=True)
        em.insns.append(Insn(Opcode.SYNC, {"mask": int(SyncMask.COMPUTE)}))
        em.comp_synced = em.comp_n
        cb_slot = Slot("CB", 0, 0, fmt.k * fmt.d)
        cb_slot.assign("cb")
        em.emit_dma(Insn(Opcode.LOAD, {
            "buf": int(Buf.CB), "ext_addr": self.cb_addr // B, "buf_addr": 0,
            "words": -(-fmt.k * fmt.d // B), "runs": 1, "ext_stride": 0, "buf_stride": 0}),
            cb_slot)
        return cb_slot

    def compute_step(self, i: int, st: Step, cur_unit: int, cb_slot: Slot | None) -> int:
        """Load what step ``i`` reads, store the previous unit when the unit changes, emit the
        COMPUTE and feed the DMA unit; returns the unit now computed."""
        plan, em, x, y, cfg = self.plan, self.em, self.x, self.y, self.cfg
        R, NC = cfg.rows, cfg.cols
        pt, pl, _, _ = plan.pad
        b, g, p0, k = st
        u = self.unit_of[b, g]
        ka, kw, kb = self.keys_of(st)
        oy0, oy1 = plan.bands[b]
        lo, hi = plan.band_in[b]
        npix = min(R, oy1 * plan.OW - p0)
        oy, ox = divmod(p0, plan.OW)
        oy_last = (p0 + npix - 1) // plan.OW
        row_tag = min(hi, max(lo + 1, oy_last * plan.sy - pt + plan.KH))
        busy: set[int] = set()
        sa, na = self.demand(ka, i, busy, row_tag)
        busy.add(id(sa))
        sw, nw = self.demand(kw, i, busy, None)
        busy.add(id(sw))
        sb, nb = self.demand(kb, i, busy, None)
        so = self.outs[u % plan.n_out]
        if u != cur_unit:
            if cur_unit >= 0:
                em.sync(int(SyncMask.COMPUTE) | em.compute_mask([na, nw, nb]))
                self.store_unit(cur_unit)
            cur_unit = u
            self.res_prefetch(u + 1)
        no = em.ready(so)
        slots, needs = [sa, sw, sb, so], [na, nw, nb, no]
        if cb_slot is not None:
            slots.append(cb_slot)
            needs.append(cb_slot.last_dma)
        if self.res is not None:
            slots.append(self.ress[u % plan.n_out])
            needs.append(self.res_ready(u))
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
        # Feed the DMA unit for at most as long as this COMPUTE runs (at least one piece).
        feed_dma(em, cfg, (c1 - c0) * (k1 - k0) * plan.KW, lambda: self.prefetch(i))
        return cur_unit

    def run(self) -> dict[str, Any]:
        """Emit the layer (ending with ``SYNC ALL; MARK layer_index``); the layer's counts
        for its metadata."""
        em = self.em
        self.set_layer_registers()
        first_insn = len(em.insns)
        cb_slot = self.load_codebook() if self.plan.fmt is not None else None
        cur_unit = -1
        for i, st in enumerate(self.steps):
            cur_unit = self.compute_step(i, st, cur_unit, cb_slot)
        em.sync(int(SyncMask.COMPUTE))
        self.store_unit(cur_unit)
        em.flush()
        em.sync_all()
        em.insns.append(Insn(Opcode.MARK, {"id": self.layer_index}))
        read = {Buf.WGT: 0, Buf.CB: 0}
        for insn in em.insns[first_insn:]:
            if insn.op == Opcode.LOAD and insn.args["buf"] in read:
                read[Buf(insn.args["buf"])] += insn.args["words"] * insn.args["runs"] * self.B
        # Weight bytes the layer reads from external memory (index/raw rows + codebook).
        return {"computes": len(self.steps), "weight_bytes_read": read[Buf.WGT] + read[Buf.CB],
                "codebook_bytes_read": read[Buf.CB]}


def layer_registers(op: Conv2d, plan: ConvPlan, x: Placement, y: Placement,
                    res: Placement | None) -> list[tuple[Reg, int]]:
    """The layer registers a convolution sets before its first COMPUTE (also checked for
    their field widths before quantization, ``layout.check_layout``)."""
    _, pl, _, _ = plan.pad
    a_wrap = plan.sy * x.pitch - (plan.OW - 1) * plan.sx
    o_wrap = y.pitch - (plan.OW - 1)
    flags = ((int(Flag.RELU) if op.relu else 0)
             | (int(Flag.RESIDUAL) if res is not None else 0))
    return [(Reg.IN_H, plan.H), (Reg.IN_W, plan.W), (Reg.A_PITCH, x.pitch),
            (Reg.A_PLANE, plan.a_plane), (Reg.A_WRAP, a_wrap),
            (Reg.OUT_W, plan.OW), (Reg.STRIDE_Y, plan.sy),
            (Reg.STRIDE_X, plan.sx), (Reg.PAD_L, pl), (Reg.KH, plan.KH),
            (Reg.KW, plan.KW), (Reg.O_WRAP, o_wrap), (Reg.MODE, int(Mode.MAC)),
            (Reg.FLAGS, flags),
            (Reg.WFMT, WFMT_RAW if plan.fmt is None else WFMT_CODEBOOK)]


def schedule_conv(em: Emitter, op: Conv2d, plan: ConvPlan, cfg: CoreConfig, x: Placement,
                  y: Placement, w_addr: int, b_addr: int, layer_index: int,
                  res: Placement | None = None, cb_addr: int | None = None) -> dict[str, Any]:
    """Emit one layer's instructions (ending with ``SYNC ALL; MARK layer_index``).

    With ``res`` (the residual tensor, shaped like ``y``), each output unit's residual band is
    loaded into the RES slot at the same offsets as its OUT slot, one unit ahead.
    """
    return ConvScheduler(em, op, plan, cfg, x, y, w_addr, b_addr, layer_index, res,
                         cb_addr).run()
