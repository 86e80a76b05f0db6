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

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig

from .array import PEArray
from .buffers import ActBuffer, OutBuffer, ResBuffer, RowBuffer, log2
from .layouts import compute_insn_layout
from .requant import RequantLane

__all__ = ["ComputeUnit", "BUF_ACT", "BUF_WGT", "BUF_BIAS", "BUF_RES"]

BUF_ACT, BUF_WGT, BUF_BIAS, BUF_RES = 0, 1, 2, 3

CW = 18   # signed width of input coordinates (iy, ix) inside the walkers
KW_BITS = 16  # width of IN_H, IN_W, KH, KW, NCH inside the unit


class ComputeUnit(wiring.Component):
    """Executes COMPUTE instructions; owns the ACT, WGT, BIAS, RES and OUT buffers.

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    insn_valid : In(1), insn_ready : Out(1), insn : In(compute_insn_layout())
        COMPUTE issue (fields and the layer registers at issue time). Accepted into the 1-deep
        next-tile slot while the active tile computes.
    busy : Out(1)
        Any tile queued, reducing, or draining (SYNC bit 1).
    wr_en, wr_buf, wr_addr, wr_data : In
        DMA writes: a bus word at a buffer word address (docs/isa.md) of ACT/WGT/BIAS/RES
        (``wr_buf`` 0..3 as ``shiftbook.isa.Buf``).
    out_r_en, out_r_addr : In, out_r_data : Out
        DMA reads of OUT by word address, latency 1.
    """

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        b = cfg.bus_bytes
        super().__init__({
            "insn_valid": In(1), "insn_ready": Out(1), "insn": In(compute_insn_layout()),
            "busy": Out(1),
            "wr_en": In(1), "wr_buf": In(2), "wr_addr": In(22), "wr_data": In(8 * b),
            "out_r_en": In(1), "out_r_addr": In(22), "out_r_data": Out(8 * b),
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

        # ---------------------------------------------------------------- buffers
        act = m.submodules.act = ActBuffer(rows=R, size=cfg.abuf_bytes, bus_bytes=B)
        wgt = m.submodules.wgt = RowBuffer(depth=cfg.wbuf_rows,
                                           row_words=cfg.wbuf_row_bytes // B, bus_bytes=B)
        bias = m.submodules.bias = RowBuffer(depth=cfg.bbuf_rows,
                                             row_words=cfg.bbuf_row_bytes // B, bus_bytes=B)
        res = m.submodules.res = ResBuffer(banks=C, bank_bytes=cfg.obuf_bytes, bus_bytes=B)
        out = m.submodules.out = OutBuffer(banks=C, bank_bytes=cfg.obuf_bytes, bus_bytes=B)
        for buf, k in ((act, BUF_ACT), (wgt, BUF_WGT), (bias, BUF_BIAS), (res, BUF_RES)):
            m.d.comb += [buf.w_en.eq(self.wr_en & (self.wr_buf == k)),
                         buf.w_addr.eq(self.wr_addr), buf.w_data.eq(self.wr_data)]
        m.d.comb += [out.r_en.eq(self.out_r_en), out.r_addr.eq(self.out_r_addr),
                     self.out_r_data.eq(out.r_data)]

        array = m.submodules.array = PEArray(rows=R, cols=C, acc_bits=cfg.acc_bits,
                                             exp_bits=cfg.exp_bits, kind=cfg.pe)

        # ---------------------------------------------------------------- next-tile slot
        # The pixel walk produces two PE rows per cycle into a staging shift chain of
        # L = R rounded up to even entries (row 0 ends at index 0): ceil(R/2) cycles.
        ins = self.insn
        L = R + (R % 2)
        nx_valid = Signal()      # slot holds an instruction
        nx_rdy = Signal()        # ... whose pixel walk is done
        nx_walk_cnt = Signal(range(L // 2 + 1))
        nx = Signal(compute_insn_layout())
        st_iy = [Signal(signed(CW), name=f"st_iy_{r}") for r in range(L)]
        st_ix = [Signal(signed(CW), name=f"st_ix_{r}") for r in range(L)]
        st_ab = [Signal(AW, name=f"st_ab_{r}") for r in range(L)]
        st_oo = [Signal(OB, name=f"st_oo_{r}") for r in range(L)]

        def walker_pos(name):
            return (Signal(12, name=f"{name}_ox"), Signal(signed(CW), name=f"{name}_iy"),
                    Signal(signed(CW), name=f"{name}_ix"), Signal(AW, name=f"{name}_ab"),
                    Signal(OB, name=f"{name}_oo"))

        def walker_step(p, q):
            """q = the pixel after p in raster order (docs/isa.md COMPUTE step 1)."""
            ox, iy, ix, ab, oo = p
            with m.If(ox + 1 < nx.reg_out_w[:12]):
                m.d.comb += [q[0].eq(ox + 1), q[1].eq(iy), q[2].eq(ix + nx.reg_stride_x[:CW]),
                             q[3].eq(ab + nx.reg_stride_x[:AW]), q[4].eq(oo + 1)]
            with m.Else():
                m.d.comb += [q[0].eq(0), q[1].eq(iy + nx.reg_stride_y[:CW]),
                             q[2].eq(-nx.reg_pad_l[:CW].as_signed()),
                             q[3].eq(ab + nx.reg_a_wrap[:AW]),
                             q[4].eq(oo + nx.reg_o_wrap[:OB])]

        w = walker_pos("w")       # the walk's next row
        n1 = walker_pos("w1")
        n2 = walker_pos("w2")
        walker_step(w, n1)
        walker_step(n1, n2)

        take = Signal()   # the active slot takes the next tile this cycle
        m.d.comb += self.insn_ready.eq(~nx_valid)
        with m.If(self.insn_valid & ~nx_valid):
            m.d.sync += [nx.eq(ins), nx_valid.eq(1), nx_rdy.eq(0), nx_walk_cnt.eq(0),
                         w[0].eq(ins.ox0), w[1].eq(ins.iy0), w[2].eq(ins.ix0),
                         w[3].eq(ins.act_base[:AW]), w[4].eq(ins.o_off[:OB])]
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
        a_in_h, a_in_w = Signal(KW_BITS), Signal(KW_BITS)
        a_pitch, a_plane = Signal(AW), Signal(AW)
        a_kh1, a_kw1, a_nch1 = Signal(KW_BITS), Signal(KW_BITS), Signal(KW_BITS)
        a_mode, a_flags = Signal(2), Signal(2)
        a_clear, a_drain = Signal(), Signal()
        a_npix, a_col0, a_ncols, a_bias_row = Signal(7), Signal(6), Signal(7), Signal(10)
        c_cnt, ky, kx = Signal(KW_BITS), Signal(KW_BITS), Signal(KW_BITS)
        plane, off_row = Signal(AW), Signal(AW)
        wrow = Signal(WB)
        first_step = Signal()

        is_last = Signal()
        m.d.comb += is_last.eq((kx == a_kw1) & (ky == a_kh1) & (c_cnt == a_nch1))
        d_idle = Signal()
        d_free = Signal()
        stall = Signal()
        m.d.comb += stall.eq(is_last & a_drain & ~d_free)
        emit = Signal()
        m.d.comb += emit.eq(a_valid & ~stall)
        m.d.comb += take.eq(nx_rdy & (~a_valid | (emit & is_last)))

        with m.If(take):
            m.d.sync += [a_valid.eq(1), first_step.eq(1), c_cnt.eq(0), ky.eq(0), kx.eq(0),
                         plane.eq(0), off_row.eq(0), wrow.eq(nx.wgt_base[:WB]),
                         a_in_h.eq(nx.reg_in_h[:KW_BITS]), a_in_w.eq(nx.reg_in_w[:KW_BITS]),
                         a_pitch.eq(nx.reg_a_pitch[:AW]), a_plane.eq(nx.reg_a_plane[:AW]),
                         a_kh1.eq(nx.reg_kh[:KW_BITS] - 1), a_kw1.eq(nx.reg_kw[:KW_BITS] - 1),
                         a_nch1.eq(nx.reg_nch[:KW_BITS] - 1),
                         a_mode.eq(nx.reg_mode[:2]), a_flags.eq(nx.reg_flags[:2]),
                         a_clear.eq(nx.clear), a_drain.eq(nx.drain), a_npix.eq(nx.npix),
                         a_col0.eq(nx.col0), a_ncols.eq(nx.ncols),
                         a_bias_row.eq(nx.bias_row)]
            for r in range(R):
                m.d.sync += [a_iy[r].eq(st_iy[r]), a_ix[r].eq(st_ix[r]), a_ab[r].eq(st_ab[r]),
                             a_oo[r].eq(st_oo[r])]
        with m.Elif(emit):
            m.d.sync += [first_step.eq(0), wrow.eq(wrow + 1)]
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
        m.d.comb += wgt.r_addr.eq(s1_wrow)

        # ---------------------------------------------------------------- S2: to the array
        s2_en, s2_first, s2_load, s2_mode = Signal(), Signal(), Signal(), Signal(2)
        s2_ok = [Signal(name=f"s2_ok_{r}") for r in range(R)]
        m.d.sync += [s2_en.eq(s1_en), s2_first.eq(s1_first), s2_load.eq(s1_load),
                     s2_mode.eq(s1_mode)]
        for r in range(R):
            m.d.sync += s2_ok[r].eq(s1_ok[r])
            m.d.comb += [array.x[r].eq(act.r_data[r]), array.valid[r].eq(s2_ok[r])]
        for c in range(C):
            m.d.comb += array.code[c].eq(wgt.r_data.word_select(c, 8))
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
        d_npix, d_col0, d_ncols = Signal(7), Signal(6), Signal(7)
        d_relu, d_resid = Signal(), Signal()
        d_bias_row = Signal(10)
        d_shift = Signal()
        p_valid = Signal()
        p_wait = Signal(2)
        p_oo = [Signal(OB, name=f"p_oo_{r}") for r in range(R)]
        p_npix, p_col0, p_ncols = Signal(7), Signal(6), Signal(7)
        p_relu, p_resid = Signal(), Signal()
        p_bias_row = Signal(10)
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
            lane = m.submodules[f"requant_{c}"] = RequantLane(acc_bits=cfg.acc_bits)
            e = bias.r_data[64 * c:64 * c + 64]
            m.d.comb += [lane.i_valid.eq(l_valid), lane.acc.eq(l_acc[c]),
                         lane.bias.eq(e[0:32]), lane.shift.eq(e[32:40]),
                         lane.res_shift.eq(e[40:48]), lane.res.eq(res.r_data[c]),
                         lane.relu.eq(l_relu), lane.residual.eq(l_resid),
                         out.w_data[c].eq(lane.out)]
            w_en.append(lane.o_valid & cols_pipe[-1][c])
        for c in range(C):
            m.d.comb += out.w_en[c].eq(w_en[c])

        m.d.comb += self.busy.eq(nx_valid | a_valid | s1_en | s2_en | s3_en | ~d_idle)
        return m
