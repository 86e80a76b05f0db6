"""The compute unit: pixel walker, reduction walker, PE array, drain through the
requantization lanes into OUT. Address math is incremental (adders only, no multipliers).

Pipeline of one reduction step (docs/isa.md COMPUTE, step 2)::

    S0  reduction walker (c, ky, kx) of the active tile: offset, WGT row, first/last
    S1  per row: ACT address = abase_r + offset, in-bounds bit; addresses to ACT and WGT
    S2  ACT bytes and WGT row arrive; to the array (broadcast register, then the PEs)
    S4  accumulators updated; the last step of a draining tile also loads the drain registers

Tiles overlap three ways: the pixel walker fills a 1-deep "next tile" slot (R/2 cycles) while
the active tile reduces; the active tile switches to the next one without a bubble; the drain
(npix cycles shifting the drain registers through the lanes) runs while the next tile
reduces. A tile whose last step would reload the drain registers before the previous drain
has shifted them all out waits (no stall when a tile has at least npix steps).
"""

from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig
from shiftbook.fields import coord_bits, dim_bits, field_bits
from shiftbook.isa import WFMT_CODEBOOK, Mode

from .array import PEArray
from .buffers import ActBuffer, OutBuffer, ResBuffer, RowBuffer, is_ice40, log2
from .decoder import DecoderArray
from .requant import RequantLane

__all__ = ["ComputeUnit", "compute_insn_layout", "BUF_ACT", "BUF_WGT", "BUF_BIAS", "BUF_RES"]

BUF_ACT, BUF_WGT, BUF_BIAS, BUF_RES = 0, 1, 2, 3


def compute_insn_layout(cfg: CoreConfig) -> data.StructLayout:
    """A COMPUTE as issued to the unit: its fields and every layer register (``reg_<name>``)
    at the width the config can use (``shiftbook.fields.field_bits``: buffer
    address bits, array shape, codebook limits), not the ISA's. The controller's layer
    registers and the unit's next-tile slot hold this layout; the compiler refuses any value
    that would not fit it."""
    fields = {}
    for name, (bits, kind) in field_bits(cfg).items():
        fields[name] = signed(bits) if kind == "signed" else unsigned(bits)
    return data.StructLayout(fields)


class ComputeUnit(wiring.Component):
    """Executes COMPUTE instructions; owns the ACT, WGT, BIAS, RES and OUT buffers.

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    insn_valid : In(1), insn_ready : Out(1), insn : In(compute_insn_layout(cfg))
        COMPUTE issue (fields and the layer registers at issue time). Accepted into the 1-deep
        next-tile slot while the active tile computes.
    busy : Out(1)
        Any tile queued, reducing, or draining (SYNC bit 1).
    wr_en, wr_buf, wr_addr, wr_data : In
        DMA writes: a bus word at a buffer word address (docs/isa.md) of ACT/WGT/BIAS/RES
        (``wr_buf`` 0..3 as ``shiftbook.isa.Buf``).
    out_r_en, out_r_addr : In, out_r_data : Out
        DMA reads of OUT by word address, latency 1.
    cb_addr, cb_data, cb_en : In
        The codebook write port of the decoder array (LOAD CB, from the DMA).
    error : Out(1), clear_error : In(1)
        Sticky: an index row with an index ``>= CB_K`` went into the decoder; cleared by
        ``clear_error`` (a run's start).
    """

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        b = cfg.bus_bytes
        super().__init__({
            "insn_valid": In(1), "insn_ready": Out(1), "insn": In(compute_insn_layout(cfg)),
            "busy": Out(1),
            "wr_en": In(1), "wr_buf": In(2), "wr_addr": In(22), "wr_data": In(8 * b),
            "out_r_en": In(1), "out_r_addr": In(22), "out_r_data": Out(8 * b),
            "cb_addr": In(cfg.index_bits_max),
            "cb_data": In(data.ArrayLayout(unsigned(cfg.code_bits), cfg.max_d)),
            "cb_en": In(cfg.max_d),
            "error": Out(1), "clear_error": In(1),
        })

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        R, C, B = cfg.rows, cfg.cols, cfg.bus_bytes
        AW = log2(cfg.abuf_bytes)
        OB = log2(cfg.obuf_bytes)
        WB = log2(cfg.wbuf_rows)
        BB = max(1, log2(cfg.bbuf_rows))
        DB = dim_bits(cfg)        # IN_H, IN_W, OUT_W, KH, KW, NCH and their counters
        CW = coord_bits(cfg)      # signed input coordinates (iy, ix) in the walkers
        fb = field_bits(cfg)
        NP, C0, NC = fb["npix"][0], fb["col0"][0], fb["ncols"][0]

        # ---------------------------------------------------------------- buffers
        act = m.submodules.act = ActBuffer(rows=R, size=cfg.abuf_bytes, bus_bytes=B)
        wgt = m.submodules.wgt = RowBuffer(depth=cfg.wbuf_rows,
                                           row_words=cfg.wbuf_row_bytes // B, bus_bytes=B)
        # iCE40 has no distributed RAM: a small BIAS buffer would become flip-flops and
        # read multiplexers there, so it asks for block RAM (spare on the UP5K).
        bias = m.submodules.bias = RowBuffer(depth=cfg.bbuf_rows,
                                             row_words=cfg.bbuf_row_bytes // B, bus_bytes=B,
                                             ram_style="block" if is_ice40(platform) else None)
        res = m.submodules.res = ResBuffer(banks=C, bank_bytes=cfg.obuf_bytes, bus_bytes=B)
        out = m.submodules.out = OutBuffer(banks=C, bank_bytes=cfg.obuf_bytes, bus_bytes=B)
        for buf, k in ((act, BUF_ACT), (wgt, BUF_WGT), (bias, BUF_BIAS), (res, BUF_RES)):
            m.d.comb += [buf.w_en.eq(self.wr_en & (self.wr_buf == k)),
                         buf.w_addr.eq(self.wr_addr), buf.w_data.eq(self.wr_data)]
        m.d.comb += [out.r_en.eq(self.out_r_en), out.r_addr.eq(self.out_r_addr),
                     self.out_r_data.eq(out.r_data)]

        array = m.submodules.array = PEArray(rows=R, cols=C, acc_bits=cfg.acc_bits,
                                             exp_bits=cfg.exp_bits, kind=cfg.pe)
        dec = m.submodules.decoder = DecoderArray(lanes=C, max_k=cfg.max_k, max_d=cfg.max_d,
                                                  code_bits=cfg.code_bits)
        m.d.comb += [dec.cb_addr.eq(self.cb_addr), dec.cb_data.eq(self.cb_data),
                     dec.cb_en.eq(self.cb_en)]

        # ---------------------------------------------------------------- next-tile slot
        # The pixel walk produces two PE rows per cycle into a staging shift chain of
        # L = R rounded up to even entries (row 0 ends at index 0): ceil(R/2) cycles.
        ins = self.insn
        L = R + (R % 2)
        nx_valid = Signal()      # slot holds an instruction
        nx_rdy = Signal()        # ... whose pixel walk is done
        nx_walk_cnt = Signal(range(L // 2 + 1))
        nx = Signal(compute_insn_layout(cfg))
        st_iy = [Signal(signed(CW), name=f"st_iy_{r}") for r in range(L)]
        st_ix = [Signal(signed(CW), name=f"st_ix_{r}") for r in range(L)]
        st_ab = [Signal(AW, name=f"st_ab_{r}") for r in range(L)]
        st_oo = [Signal(OB, name=f"st_oo_{r}") for r in range(L)]

        def walker_pos(name):
            return (Signal(DB, name=f"{name}_ox"), Signal(signed(CW), name=f"{name}_iy"),
                    Signal(signed(CW), name=f"{name}_ix"), Signal(AW, name=f"{name}_ab"),
                    Signal(OB, name=f"{name}_oo"))

        def walker_step(p, q):
            """q = the pixel after p in raster order (docs/isa.md COMPUTE step 1)."""
            ox, iy, ix, ab, oo = p
            with m.If(ox + 1 < nx.reg_out_w):
                m.d.comb += [q[0].eq(ox + 1), q[1].eq(iy), q[2].eq(ix + nx.reg_stride_x),
                             q[3].eq(ab + nx.reg_stride_x[:AW]), q[4].eq(oo + 1)]
            with m.Else():
                m.d.comb += [q[0].eq(0), q[1].eq(iy + nx.reg_stride_y),
                             q[2].eq(-nx.reg_pad_l),
                             q[3].eq(ab + nx.reg_a_wrap[:AW]),
                             q[4].eq(oo + nx.reg_o_wrap[:OB])]

        w = walker_pos("w")       # the walk's next row
        n1 = walker_pos("w1")
        n2 = walker_pos("w2")
        walker_step(w, n1)
        walker_step(n1, n2)

        take = Signal()   # the active slot takes the next tile this cycle
        nx_claimed = Signal()   # the index fetcher has started on the slot's tile
        nx_wfmt = Signal()
        # (MAX and SUM read no weights: their tiles never use the decoder)
        m.d.comb += nx_wfmt.eq((nx.reg_wfmt == WFMT_CODEBOOK) & (nx.reg_mode == Mode.MAC))
        m.d.comb += self.insn_ready.eq(~nx_valid)
        with m.If(self.insn_valid & ~nx_valid):
            m.d.sync += [nx.eq(ins), nx_valid.eq(1), nx_rdy.eq(0), nx_walk_cnt.eq(0),
                         nx_claimed.eq(0),
                         w[0].eq(ins.ox0), w[1].eq(ins.iy0), w[2].eq(ins.ix0),
                         w[3].eq(ins.act_base), w[4].eq(ins.o_off)]
        with m.Elif(nx_valid & ~nx_rdy):
            for chain, k in ((st_iy, 1), (st_ix, 2), (st_ab, 3), (st_oo, 4)):
                m.d.sync += [chain[L - 2].eq(w[k]), chain[L - 1].eq(n1[k])]
                for r in range(L - 2):
                    m.d.sync += chain[r].eq(chain[r + 2])
            m.d.sync += [dst.eq(src) for dst, src in zip(w, n2, strict=True)]
            m.d.sync += nx_walk_cnt.eq(nx_walk_cnt + 1)
            with m.If(nx_walk_cnt == L // 2 - 1):
                m.d.sync += nx_rdy.eq(1)
        with m.Elif(take):
            m.d.sync += [nx_valid.eq(0), nx_rdy.eq(0)]

        # ---------------------------------------------------------------- active tile
        a_valid = Signal()
        a_iy = [Signal(signed(CW), name=f"a_iy_{r}") for r in range(R)]
        a_ix = [Signal(signed(CW), name=f"a_ix_{r}") for r in range(R)]
        a_ab = [Signal(AW, name=f"a_ab_{r}") for r in range(R)]
        a_oo = [Signal(OB, name=f"a_oo_{r}") for r in range(R)]
        a_in_h, a_in_w = Signal(DB), Signal(DB)
        a_pitch, a_plane = Signal(AW), Signal(AW)
        a_kh1, a_kw1, a_nch1 = Signal(DB), Signal(DB), Signal(DB)
        a_mode, a_flags = Signal(2), Signal(2)
        a_clear, a_drain = Signal(), Signal()
        a_npix, a_col0, a_ncols, a_bias_row = Signal(NP), Signal(C0), Signal(NC), Signal(BB)
        c_cnt, ky, kx = Signal(DB), Signal(DB), Signal(DB)
        plane, off_row = Signal(AW), Signal(AW)
        wrow = Signal(WB)
        first_step = Signal()

        is_last = Signal()
        m.d.comb += is_last.eq((kx == a_kw1) & (ky == a_kh1) & (c_cnt == a_nch1))
        d_idle = Signal()
        d_free = Signal()
        stall = Signal()
        m.d.comb += stall.eq(is_last & a_drain & ~d_free)
        # Codebook tiles (WFMT=1) take each step's code row from the decoder: a step is
        # emitted only when the decoder has one (its `o` stream), and consumes it.
        a_wfmt = Signal()
        a_d = Signal(range(1, cfg.max_d + 1))
        cpos = Signal(range(cfg.max_d))          # position of the step in its block
        cpos_last = Signal()
        m.d.comb += cpos_last.eq((cpos + 1 == a_d) | (cpos == cfg.max_d - 1))
        emit = Signal()
        m.d.comb += emit.eq(a_valid & ~stall & (~a_wfmt | dec.o.valid))
        m.d.comb += dec.o.ready.eq(a_valid & a_wfmt & ~stall)
        # A last block cut short: drop the rest of its codeword (docs/decoder.md).
        m.d.comb += dec.flush.eq(emit & a_wfmt & is_last & ~cpos_last)
        m.d.comb += take.eq(nx_rdy & (~a_valid | (emit & is_last)) & (nx_claimed | ~nx_wfmt))

        with m.If(take):
            m.d.sync += [a_valid.eq(1), first_step.eq(1), c_cnt.eq(0), ky.eq(0), kx.eq(0),
                         plane.eq(0), off_row.eq(0), wrow.eq(nx.wgt_base),
                         a_in_h.eq(nx.reg_in_h), a_in_w.eq(nx.reg_in_w),
                         a_pitch.eq(nx.reg_a_pitch), a_plane.eq(nx.reg_a_plane),
                         a_kh1.eq(nx.reg_kh - 1), a_kw1.eq(nx.reg_kw - 1),
                         a_nch1.eq(nx.reg_nch - 1),
                         a_mode.eq(nx.reg_mode), a_flags.eq(nx.reg_flags),
                         a_clear.eq(nx.clear), a_drain.eq(nx.drain), a_npix.eq(nx.npix),
                         a_col0.eq(nx.col0), a_ncols.eq(nx.ncols),
                         a_bias_row.eq(nx.bias_row), a_wfmt.eq(nx_wfmt), a_d.eq(nx.reg_cb_d),
                         cpos.eq(0)]
            for r in range(R):
                m.d.sync += [a_iy[r].eq(st_iy[r]), a_ix[r].eq(st_ix[r]), a_ab[r].eq(st_ab[r]),
                             a_oo[r].eq(st_oo[r])]
        with m.Elif(emit):
            m.d.sync += [first_step.eq(0), wrow.eq(wrow + 1),
                         cpos.eq(Mux(cpos_last, 0, cpos + 1))]
            with m.If(is_last):
                m.d.sync += a_valid.eq(0)
            with m.Elif(kx != a_kw1):
                m.d.sync += kx.eq(kx + 1)
            with m.Elif(ky != a_kh1):
                m.d.sync += [kx.eq(0), ky.eq(ky + 1), off_row.eq(off_row + a_pitch)]
            with m.Else():
                m.d.sync += [kx.eq(0), ky.eq(0), c_cnt.eq(c_cnt + 1),
                             plane.eq(plane + a_plane), off_row.eq(plane + a_plane)]

        # ---------------------------------------------------------------- S1: addresses
        s1_en, s1_first, s1_load, s1_mode = Signal(), Signal(), Signal(), Signal(2)
        s1_wrow = Signal(WB)
        s1_addr = [Signal(AW, name=f"s1_addr_{r}") for r in range(R)]
        s1_ok = [Signal(name=f"s1_ok_{r}") for r in range(R)]
        off = Signal(AW)
        m.d.comb += off.eq(off_row + kx[:AW])
        m.d.sync += [s1_en.eq(emit), s1_first.eq(first_step & a_clear),
                     s1_load.eq(is_last & a_drain), s1_mode.eq(a_mode), s1_wrow.eq(wrow)]
        for r in range(R):
            y = Signal(signed(CW + 2), name=f"y_{r}")
            x = Signal(signed(CW + 2), name=f"x_{r}")
            m.d.comb += [y.eq(a_iy[r] + ky), x.eq(a_ix[r] + kx)]
            m.d.sync += [s1_addr[r].eq(a_ab[r] + off),
                         s1_ok[r].eq((y >= 0) & (y < a_in_h) & (x >= 0) & (x < a_in_w))]
            m.d.comb += act.r_addr[r].eq(s1_addr[r])
        s1_wfmt = Signal()
        s1_code = Signal(dec.o.payload.shape())
        m.d.sync += [s1_wfmt.eq(a_wfmt), s1_code.eq(dec.o.payload)]

        # ---------------------------------------------------------------- index fetcher
        # For a codebook tile, a mirror of the reduction walker (c, ky, kx and the position
        # in the block) runs ahead of the active tile: at every block start it pushes the
        # next index row into the decoder, so it pushes exactly ceil(NCH*KH*KW / CB_D) rows
        # (no divider). Index rows are shifted out of the held WGT row (IDX_PER_ROW of them
        # per row); the next WGT row is read one cycle ahead. The fetcher starts on the slot's
        # tile as soon as it is done with the active one (same CB_D and CB_K), so blocks flow
        # into the decoder without a bubble between tiles; the active tile takes the slot's
        # tile only once the fetcher has started on it. Raw reads (S1) have the WGT port first.
        IB = cfg.index_bits_max
        W = 8 * cfg.wbuf_row_bytes
        f_active = Signal()
        f_d = Signal(range(1, cfg.max_d + 1), init=cfg.max_d)
        f_k = Signal(range(1, cfg.max_k + 1), init=cfg.max_k)
        f_ib = Signal(range(IB + 1))
        f_per1 = Signal(range(W + 1))
        f_kh1, f_kw1, f_nch1 = Signal(DB), Signal(DB), Signal(DB)
        f_c, f_ky, f_kx = Signal(DB), Signal(DB), Signal(DB)
        f_pos = Signal(range(cfg.max_d))
        f_next = Signal(WB)
        hold = Signal(W)
        hold_valid = Signal()
        sub = Signal(range(W + 1))
        rdat_ok = Signal()
        m.d.comb += [dec.d.eq(f_d), dec.k.eq(f_k)]

        f_last, f_start, push, f_step = Signal(), Signal(), Signal(), Signal()
        claim = Signal()
        compat = Signal()
        m.d.comb += [
            compat.eq((nx.reg_cb_d == f_d) & (nx.reg_cb_k == f_k)),
            # (in the cycle of the active tile's last step at the latest)
            claim.eq(nx_valid & ~nx_claimed & nx_wfmt & (~f_active | (f_step & f_last)) &
                     (compat | ~(a_valid & a_wfmt))),
        ]
        # The current WGT row: the held one, else the one the read port brings this cycle.
        src = Signal(W)
        m.d.comb += src.eq(Mux(hold_valid, hold, wgt.r_data))
        idx = [Signal(IB, name=f"f_idx_{j}") for j in range(C)]
        shifted = Signal(W)
        with m.Switch(f_ib):
            for v in range(1, IB + 1):
                with m.Case(v):
                    m.d.comb += [idx[j].eq(src[j * v:(j + 1) * v]) for j in range(C)]
                    m.d.comb += shifted.eq(src >> (C * v))
        m.d.comb += [
            f_last.eq((f_kx == f_kw1) & (f_ky == f_kh1) & (f_c == f_nch1)),
            f_start.eq(f_pos == 0),
            dec.i.valid.eq(f_active & f_start & (hold_valid | rdat_ok)),
            push.eq(dec.i.valid & dec.i.ready),
            f_step.eq(f_active & (~f_start | push)),
        ]
        m.d.comb += [dec.i.payload[j].eq(idx[j]) for j in range(C)]
        with m.If(claim):
            m.d.sync += [f_active.eq(1), nx_claimed.eq(1), f_d.eq(nx.reg_cb_d),
                         f_k.eq(nx.reg_cb_k), f_ib.eq(nx.reg_idx_bits),
                         f_per1.eq(nx.reg_idx_per_row - 1),
                         f_kh1.eq(nx.reg_kh - 1), f_kw1.eq(nx.reg_kw - 1),
                         f_nch1.eq(nx.reg_nch - 1),
                         f_c.eq(0), f_ky.eq(0), f_kx.eq(0), f_pos.eq(0)]
        with m.Elif(f_step):
            with m.If(f_last):
                m.d.sync += f_active.eq(0)
            with m.Elif(f_kx != f_kw1):
                m.d.sync += f_kx.eq(f_kx + 1)
            with m.Elif(f_ky != f_kh1):
                m.d.sync += [f_kx.eq(0), f_ky.eq(f_ky + 1)]
            with m.Else():
                m.d.sync += [f_kx.eq(0), f_ky.eq(0), f_c.eq(f_c + 1)]
            m.d.sync += f_pos.eq(Mux((f_pos + 1 == f_d) | (f_pos == cfg.max_d - 1), 0,
                                     f_pos + 1))
        # the held WGT row: taken from the read port when none is held (`load`), shifted by
        # one index row per push, dropped after IDX_PER_ROW pushes
        load = Signal()
        cur_sub = Signal(range(W + 1))
        m.d.comb += [load.eq(f_active & ~hold_valid & rdat_ok),
                     cur_sub.eq(Mux(hold_valid, sub, 0))]
        with m.If(claim):
            m.d.sync += [hold_valid.eq(0), f_next.eq(nx.wgt_base)]
        with m.Else():
            with m.If(load):
                m.d.sync += [hold.eq(src), hold_valid.eq(1), sub.eq(0), f_next.eq(f_next + 1)]
            with m.If(push):
                m.d.sync += [hold.eq(shifted), sub.eq(cur_sub + 1)]
                with m.If(cur_sub == f_per1):
                    m.d.sync += hold_valid.eq(0)
        raw_rd = Signal()
        f_addr = Signal(WB)
        m.d.comb += [
            raw_rd.eq(s1_en & ~s1_wfmt),
            f_addr.eq(Mux(claim, nx.wgt_base, f_next + load)),
            wgt.r_addr.eq(Mux(raw_rd, s1_wrow, f_addr)),
        ]
        m.d.sync += rdat_ok.eq(~raw_rd & (claim | f_active))
        # an index past the codebook stops the core (sticky until the next run's start)
        oob = Signal()
        m.d.comb += oob.eq(Cat(*[i >= f_k for i in idx]).any())
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        with m.Elif(push & oob):
            m.d.sync += self.error.eq(1)

        # ---------------------------------------------------------------- S2: to the array
        s2_en, s2_first, s2_load, s2_mode = Signal(), Signal(), Signal(), Signal(2)
        s2_ok = [Signal(name=f"s2_ok_{r}") for r in range(R)]
        s2_wfmt = Signal()
        s2_code = Signal(dec.o.payload.shape())
        m.d.sync += [s2_en.eq(s1_en), s2_first.eq(s1_first), s2_load.eq(s1_load),
                     s2_mode.eq(s1_mode), s2_wfmt.eq(s1_wfmt), s2_code.eq(s1_code)]
        for r in range(R):
            m.d.sync += s2_ok[r].eq(s1_ok[r])
            m.d.comb += [array.x[r].eq(act.r_data[r]), array.valid[r].eq(s2_ok[r])]
        for c in range(C):
            # 2:1 mux per column: decoded code (WFMT=1) or the raw WGT byte
            m.d.comb += array.code[c].eq(Mux(s2_wfmt, s2_code[c], wgt.r_data.word_select(c, 8)))
        m.d.comb += [array.en.eq(s2_en), array.first.eq(s2_first), array.load.eq(s2_load),
                     array.mode.eq(s2_mode)]
        s3_en = Signal()
        m.d.sync += s3_en.eq(s2_en)

        # ---------------------------------------------------------------- drain
        # A draining tile's last step (emitted at t) loads the drain registers at the end of
        # t+3 (S1 t+1, S2 t+2, broadcast t+3). Its job waits in a pending slot meanwhile and
        # starts shifting at t+4: one row per cycle through the lanes (SHIFT), then the
        # lanes' pipeline empties (FLUSH). The job is accepted while the previous one has at
        # most 4 rows left to shift, so its last shift is no later than the load.
        lat = 1 + RequantLane.latency   # RES read + lanes
        d_oo = [Signal(OB, name=f"d_oo_{r}") for r in range(R)]
        d_cnt = Signal(8)
        d_npix, d_col0, d_ncols = Signal(NP), Signal(C0), Signal(NC)
        d_relu, d_resid = Signal(), Signal()
        d_bias_row = Signal(BB)
        d_shift = Signal()
        p_valid = Signal()
        p_wait = Signal(2)
        p_oo = [Signal(OB, name=f"p_oo_{r}") for r in range(R)]
        p_npix, p_col0, p_ncols = Signal(NP), Signal(C0), Signal(NC)
        p_relu, p_resid = Signal(), Signal()
        p_bias_row = Signal(BB)
        m.d.comb += bias.r_addr.eq(d_bias_row)
        m.d.comb += array.shift.eq(d_shift)
        shifting = Signal()
        left = Signal(9)
        m.d.comb += left.eq(d_npix - d_cnt)
        m.d.comb += d_free.eq(~p_valid & (~shifting | (left <= 4)))
        d_accept = Signal()
        m.d.comb += d_accept.eq(d_free & emit & is_last & a_drain)
        with m.If(d_accept):
            m.d.sync += [p_valid.eq(1), p_wait.eq(2), p_npix.eq(a_npix), p_col0.eq(a_col0),
                         p_ncols.eq(a_ncols), p_relu.eq(a_flags[0]), p_resid.eq(a_flags[1]),
                         p_bias_row.eq(a_bias_row)]
            for r in range(R):
                m.d.sync += p_oo[r].eq(a_oo[r])
        with m.Elif(p_valid & (p_wait != 0)):
            m.d.sync += p_wait.eq(p_wait - 1)
        start_job = Signal()
        m.d.comb += start_job.eq(p_valid & (p_wait == 0))
        def start_next():
            # (last in every state, so it wins over that state's own updates)
            with m.If(start_job):
                m.d.sync += [p_valid.eq(0), d_cnt.eq(0), d_npix.eq(p_npix), d_col0.eq(p_col0),
                             d_ncols.eq(p_ncols), d_relu.eq(p_relu), d_resid.eq(p_resid),
                             d_bias_row.eq(p_bias_row)]
                for r in range(R):
                    m.d.sync += d_oo[r].eq(p_oo[r])
                with m.If(p_npix == 0):
                    m.next = "FLUSH"
                with m.Else():
                    m.next = "SHIFT"

        with m.FSM(name="drain"):
            with m.State("IDLE"):
                m.d.comb += d_idle.eq(~p_valid)
                start_next()
            with m.State("SHIFT"):
                m.d.comb += [d_shift.eq(1), shifting.eq(1)]
                m.d.sync += d_cnt.eq(d_cnt + 1)
                for r in range(R - 1):
                    m.d.sync += d_oo[r].eq(d_oo[r + 1])
                with m.If(d_cnt == d_npix - 1):
                    m.d.sync += d_cnt.eq(0)
                    m.next = "FLUSH"
                start_next()
            with m.State("FLUSH"):
                m.d.sync += d_cnt.eq(d_cnt + 1)
                with m.If(d_cnt == lat):
                    m.next = "IDLE"
                start_next()

        # RES read in the SHIFT cycle; lanes one cycle later.
        m.d.comb += res.r_addr.eq(d_oo[0])
        l_valid, l_relu, l_resid = Signal(), Signal(), Signal()
        l_oo = Signal(OB)
        l_acc = [Signal(signed(cfg.acc_bits), name=f"l_acc_{c}") for c in range(C)]
        m.d.sync += [l_valid.eq(d_shift), l_oo.eq(d_oo[0]), l_relu.eq(d_relu),
                     l_resid.eq(d_resid)]
        for c in range(C):
            m.d.sync += l_acc[c].eq(array.drain[c])
        # the lanes' output address
        oo_pipe = [l_oo]
        for i in range(RequantLane.latency):
            s = Signal(OB, name=f"oo_pipe_{i}")
            m.d.sync += s.eq(oo_pipe[-1])
            oo_pipe.append(s)
        m.d.comb += out.w_addr.eq(oo_pipe[-1])
        col_end = Signal(8)
        m.d.comb += col_end.eq(d_col0 + d_ncols)
        l_cols = Signal(C)
        m.d.sync += l_cols.eq(Cat(*[(c >= d_col0) & (c < col_end) for c in range(C)]))
        cols_pipe = [l_cols]
        for i in range(RequantLane.latency):
            s = Signal(C, name=f"cols_pipe_{i}")
            m.d.sync += s.eq(cols_pipe[-1])
            cols_pipe.append(s)
        w_en = []
        for c in range(C):
            # (the compiler refuses a bias that does not fit the accumulator)
            lane = m.submodules[f"requant_{c}"] = RequantLane(acc_bits=cfg.acc_bits,
                                                              bias_bits=min(cfg.acc_bits, 32))
            e = bias.r_data[64 * c:64 * c + 64]
            m.d.comb += [lane.i_valid.eq(l_valid), lane.acc.eq(l_acc[c]),
                         lane.bias.eq(e[0:lane.bias.shape().width]), lane.shift.eq(e[32:40]),
                         lane.res_shift.eq(e[40:48]), lane.res.eq(res.r_data[c]),
                         lane.relu.eq(l_relu), lane.residual.eq(l_resid),
                         out.w_data[c].eq(lane.out)]
            w_en.append(lane.o_valid & cols_pipe[-1][c])
        for c in range(C):
            m.d.comb += out.w_en[c].eq(w_en[c])

        m.d.comb += self.busy.eq(nx_valid | a_valid | f_active | s1_en | s2_en | s3_en |
                                 ~d_idle)
        return m
