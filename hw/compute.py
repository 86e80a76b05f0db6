"""The compute unit: next-tile slot (pixel walker), reduction walker, PE array, codebook index
fetcher and decoder, drain through the requantization lanes into OUT. Address math is
incremental (adders only, no multipliers).

Pipeline of one reduction step (docs/isa.md COMPUTE, step 2)::

    S0  reduction walker (c, ky, kx) of the active tile: offset, WGT row, first/last
    S1  per row: ACT address = abase_r + offset, in-bounds bit; addresses to ACT and WGT
    S2  ACT bytes and WGT row arrive; to the array (broadcast register, then the PEs)
    S4  accumulators updated; the last step of a draining tile also loads the drain registers

Tiles overlap three ways: the pixel walker (``hw.compute_walk``) fills a 1-deep "next tile"
slot (R/2 cycles) while the active tile reduces; the active tile switches to the next one
without a bubble; the drain (``hw.compute_drain``: npix cycles shifting the drain registers
through the lanes) runs while the next tile reduces. A tile whose last step would reload the
drain registers before the previous drain has shifted them all out waits (no stall when a
tile has at least npix steps). Codebook tiles take their code rows from the decoder, fed by
the index fetcher (``hw.compute_cbfetch``).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig
from shiftbook.fields import coord_bits, dim_bits, field_bits
from shiftbook.isa import WFMT_CODEBOOK, Buf, Mode

from .array import PEArray
from .buffers import ActBuffer, OutBuffer, ResBuffer, RowBuffer, is_ice40, log2
from .compute_cbfetch import FETCH_FIELDS, IndexFetcher
from .compute_drain import Drain
from .compute_walk import WALK_REGS, PixelWalker
from .decoder import DecoderArray
from .layouts import compute_insn_layout
from .ports import BufferPortSignature, IssueSignature

__all__ = ["ComputeUnit", "compute_insn_layout"]


class ComputeUnit(wiring.Component):
    """Executes COMPUTE instructions; owns the ACT, WGT, BIAS, RES and OUT buffers.

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    issue : In(IssueSignature(compute_insn_layout(cfg)))
        COMPUTE issue (fields and the layer registers at issue time), accepted into the
        1-deep next-tile slot while the active tile computes; ``issue.busy``: any tile
        queued, reducing, or draining (SYNC bit 1).
    dma : In(BufferPortSignature(...))
        The DMA's writes of ACT/WGT/BIAS/RES (``wr_buf`` as ``shiftbook.isa.Buf``), its OUT
        reads (latency 1) and the decoder array's codebook write port (LOAD CB).
    error : Out(1), clear_error : In(1)
        Sticky: an index row with an index ``>= CB_K`` went into the decoder; cleared by
        ``clear_error`` (a run's start).

    Submodules: ``act``, ``wgt``, ``bias``, ``res``, ``out`` (buffers), ``array``,
    ``decoder``, ``walker`` (``PixelWalker``), ``fetcher`` (``IndexFetcher``), ``drain``
    (``Drain``).
    """

    def __init__(self, cfg: CoreConfig):
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"ComputeUnit needs a CoreConfig, not {type(cfg).__name__}")
        self._cfg = cfg
        super().__init__({
            "issue": In(IssueSignature(compute_insn_layout(cfg))),
            "dma": In(BufferPortSignature(data_bits=8 * cfg.bus_bytes,
                                          cb_addr_bits=cfg.index_bits_max,
                                          code_bits=cfg.code_bits, max_d=cfg.max_d)),
            "error": Out(1), "clear_error": In(1),
        })

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        u = SimpleNamespace()      # the blocks and the signals the sections share
        self._blocks(m, u, platform)
        self._slot(m, u)
        self._active(m, u)
        self._stage1(m, u)
        self._fetch(m, u)
        self._stage2(m, u)
        self._drain(m, u)
        m.d.comb += self.issue.busy.eq(u.nx_valid | u.a_valid | u.fetcher.active | u.s1_en |
                                       u.s2_en | u.s3_en | ~u.drain.idle)
        return m

    def _blocks(self, m: Module, u: SimpleNamespace, platform) -> None:
        """Buffers (written by the DMA), the PE array, the decoder and the three helpers."""
        cfg = self._cfg
        R, C, B = cfg.rows, cfg.cols, cfg.bus_bytes
        u.act = m.submodules.act = ActBuffer(rows=R, size=cfg.abuf_bytes, bus_bytes=B)
        u.wgt = m.submodules.wgt = RowBuffer(depth=cfg.wbuf_rows,
                                             row_words=cfg.wbuf_row_bytes // B, bus_bytes=B)
        # iCE40 has no distributed RAM: a small BIAS buffer would become flip-flops and
        # read multiplexers there, so it asks for block RAM (spare on the UP5K).
        u.bias = m.submodules.bias = RowBuffer(
            depth=cfg.bbuf_rows, row_words=cfg.bbuf_row_bytes // B, bus_bytes=B,
            ram_style="block" if is_ice40(platform) else None)
        u.res = m.submodules.res = ResBuffer(banks=C, bank_bytes=cfg.obuf_bytes, bus_bytes=B)
        u.out = m.submodules.out = OutBuffer(banks=C, bank_bytes=cfg.obuf_bytes, bus_bytes=B)
        dma = self.dma
        for buf, k in ((u.act, Buf.ACT), (u.wgt, Buf.WGT), (u.bias, Buf.BIAS),
                       (u.res, Buf.RES)):
            m.d.comb += [buf.w_en.eq(dma.wr_en & (dma.wr_buf == k)),
                         buf.w_addr.eq(dma.wr_addr), buf.w_data.eq(dma.wr_data)]
        m.d.comb += [u.out.r_en.eq(dma.out_r_en), u.out.r_addr.eq(dma.out_r_addr),
                     dma.out_r_data.eq(u.out.r_data)]
        u.array = m.submodules.array = PEArray(rows=R, cols=C, acc_bits=cfg.acc_bits,
                                               exp_bits=cfg.exp_bits, kind=cfg.pe)
        u.dec = m.submodules.decoder = DecoderArray(lanes=C, max_k=cfg.max_k, max_d=cfg.max_d,
                                                    code_bits=cfg.code_bits)
        m.d.comb += [u.dec.cb_addr.eq(dma.cb_addr), u.dec.cb_data.eq(dma.cb_data),
                     u.dec.cb_en.eq(dma.cb_en)]
        u.walker = m.submodules.walker = PixelWalker(cfg)
        u.fetcher = m.submodules.fetcher = IndexFetcher(cfg)
        u.drain = m.submodules.drain = Drain(cfg)

    def _slot(self, m: Module, u: SimpleNamespace) -> None:
        """The 1-deep next-tile slot: the instruction and its pixel walk (ceil(R/2) cycles)."""
        cfg = self._cfg
        R = cfg.rows
        L = R + (R % 2)
        ins = self.issue.insn.payload
        u.nx_valid = nx_valid = Signal()    # slot holds an instruction
        u.nx_rdy = nx_rdy = Signal()        # ... whose pixel walk is done
        nx_walk_cnt = Signal(range(L // 2 + 1))
        u.nx = nx = Signal(compute_insn_layout(cfg))
        u.take = Signal()         # the active slot takes the next tile this cycle
        u.nx_claimed = Signal()   # the index fetcher has started on the slot's tile
        u.nx_wfmt = Signal()
        # (MAX and SUM read no weights: their tiles never use the decoder)
        m.d.comb += u.nx_wfmt.eq((nx.reg_wfmt == WFMT_CODEBOOK) & (nx.reg_mode == Mode.MAC))
        m.d.comb += self.issue.insn.ready.eq(~nx_valid)
        walker = u.walker
        load = self.issue.insn.valid & ~nx_valid
        m.d.comb += [walker.load.eq(load), walker.step.eq(nx_valid & ~nx_rdy),
                     walker.ox0.eq(ins.ox0), walker.iy0.eq(ins.iy0), walker.ix0.eq(ins.ix0),
                     walker.ab0.eq(ins.act_base), walker.oo0.eq(ins.o_off)]
        m.d.comb += [getattr(walker, n).eq(getattr(nx, f"reg_{n}")) for n in WALK_REGS]
        with m.If(load):
            m.d.sync += [nx.eq(ins), nx_valid.eq(1), nx_rdy.eq(0), nx_walk_cnt.eq(0),
                         u.nx_claimed.eq(0)]
        with m.Elif(nx_valid & ~nx_rdy):
            m.d.sync += nx_walk_cnt.eq(nx_walk_cnt + 1)
            with m.If(nx_walk_cnt == L // 2 - 1):
                m.d.sync += nx_rdy.eq(1)
        with m.Elif(u.take):
            m.d.sync += [nx_valid.eq(0), nx_rdy.eq(0)]

    def _active(self, m: Module, u: SimpleNamespace) -> None:
        """The active tile: its pixel rows, layer registers and the reduction walker (S0)."""
        cfg = self._cfg
        R = cfg.rows
        AW, OB = log2(cfg.abuf_bytes), log2(cfg.obuf_bytes)
        WB = log2(cfg.wbuf_rows)
        BB = max(1, log2(cfg.bbuf_rows))
        DB, CW = dim_bits(cfg), coord_bits(cfg)
        fb = field_bits(cfg)
        NP, C0, NC = fb["npix"][0], fb["col0"][0], fb["ncols"][0]
        nx, dec = u.nx, u.dec
        u.a_valid = a_valid = Signal()
        u.a_iy = [Signal(signed(CW), name=f"a_iy_{r}") for r in range(R)]
        u.a_ix = [Signal(signed(CW), name=f"a_ix_{r}") for r in range(R)]
        u.a_ab = [Signal(AW, name=f"a_ab_{r}") for r in range(R)]
        u.a_oo = [Signal(OB, name=f"a_oo_{r}") for r in range(R)]
        u.a_in_h, u.a_in_w = Signal(DB), Signal(DB)
        a_pitch, a_plane = Signal(AW), Signal(AW)
        a_kh1, a_kw1, a_nch1 = Signal(DB), Signal(DB), Signal(DB)
        u.a_mode, u.a_flags = Signal(2), Signal(2)
        u.a_clear, u.a_drain = Signal(), Signal()
        u.a_npix, u.a_col0, u.a_ncols = Signal(NP), Signal(C0), Signal(NC)
        u.a_bias_row = Signal(BB)
        u.c_cnt, u.ky, u.kx = c_cnt, ky, kx = Signal(DB), Signal(DB), Signal(DB)
        plane = Signal(AW)
        u.off_row = off_row = Signal(AW)
        u.wrow = wrow = Signal(WB)
        u.first_step = first_step = Signal()

        u.is_last = is_last = Signal()
        m.d.comb += is_last.eq((kx == a_kw1) & (ky == a_kh1) & (c_cnt == a_nch1))
        stall = Signal()
        m.d.comb += stall.eq(is_last & u.a_drain & ~u.drain.free)
        # Codebook tiles (WFMT=1) take each step's code row from the decoder: a step is
        # emitted only when the decoder has one (its `o` stream), and consumes it.
        u.a_wfmt = a_wfmt = Signal()
        a_d = Signal(range(1, cfg.max_d + 1))
        cpos = Signal(range(cfg.max_d))          # position of the step in its block
        cpos_last = Signal()
        m.d.comb += cpos_last.eq((cpos + 1 == a_d) | (cpos == cfg.max_d - 1))
        u.emit = emit = Signal()
        m.d.comb += emit.eq(a_valid & ~stall & (~a_wfmt | dec.o.valid))
        m.d.comb += dec.o.ready.eq(a_valid & a_wfmt & ~stall)
        # A last block cut short: drop the rest of its codeword (docs/decoder.md).
        m.d.comb += dec.flush.eq(emit & a_wfmt & is_last & ~cpos_last)
        m.d.comb += u.take.eq(u.nx_rdy & (~a_valid | (emit & is_last)) &
                              (u.nx_claimed | ~u.nx_wfmt))

        with m.If(u.take):
            m.d.sync += [a_valid.eq(1), first_step.eq(1), c_cnt.eq(0), ky.eq(0), kx.eq(0),
                         plane.eq(0), off_row.eq(0), wrow.eq(nx.wgt_base),
                         u.a_in_h.eq(nx.reg_in_h), u.a_in_w.eq(nx.reg_in_w),
                         a_pitch.eq(nx.reg_a_pitch), a_plane.eq(nx.reg_a_plane),
                         a_kh1.eq(nx.reg_kh - 1), a_kw1.eq(nx.reg_kw - 1),
                         a_nch1.eq(nx.reg_nch - 1),
                         u.a_mode.eq(nx.reg_mode), u.a_flags.eq(nx.reg_flags),
                         u.a_clear.eq(nx.clear), u.a_drain.eq(nx.drain), u.a_npix.eq(nx.npix),
                         u.a_col0.eq(nx.col0), u.a_ncols.eq(nx.ncols),
                         u.a_bias_row.eq(nx.bias_row), a_wfmt.eq(u.nx_wfmt),
                         a_d.eq(nx.reg_cb_d), cpos.eq(0)]
            w = u.walker
            for r in range(R):
                m.d.sync += [u.a_iy[r].eq(w.iy[r]), u.a_ix[r].eq(w.ix[r]),
                             u.a_ab[r].eq(w.ab[r]), u.a_oo[r].eq(w.oo[r])]
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

    def _stage1(self, m: Module, u: SimpleNamespace) -> None:
        """S1: per-row ACT addresses and in-bounds bits; the step's controls and code row."""
        cfg = self._cfg
        R, CW = cfg.rows, coord_bits(cfg)
        AW, WB = log2(cfg.abuf_bytes), log2(cfg.wbuf_rows)
        u.s1_en, u.s1_first, u.s1_load, u.s1_mode = Signal(), Signal(), Signal(), Signal(2)
        u.s1_wrow = Signal(WB)
        s1_addr = [Signal(AW, name=f"s1_addr_{r}") for r in range(R)]
        u.s1_ok = [Signal(name=f"s1_ok_{r}") for r in range(R)]
        off = Signal(AW)
        m.d.comb += off.eq(u.off_row + u.kx[:AW])
        m.d.sync += [u.s1_en.eq(u.emit), u.s1_first.eq(u.first_step & u.a_clear),
                     u.s1_load.eq(u.is_last & u.a_drain), u.s1_mode.eq(u.a_mode),
                     u.s1_wrow.eq(u.wrow)]
        for r in range(R):
            y = Signal(signed(CW + 2), name=f"y_{r}")
            x = Signal(signed(CW + 2), name=f"x_{r}")
            m.d.comb += [y.eq(u.a_iy[r] + u.ky), x.eq(u.a_ix[r] + u.kx)]
            m.d.sync += [s1_addr[r].eq(u.a_ab[r] + off),
                         u.s1_ok[r].eq((y >= 0) & (y < u.a_in_h) & (x >= 0) & (x < u.a_in_w))]
            m.d.comb += u.act.r_addr[r].eq(s1_addr[r])
        u.s1_wfmt = Signal()
        u.s1_code = Signal(u.dec.o.payload.shape())
        m.d.sync += [u.s1_wfmt.eq(u.a_wfmt), u.s1_code.eq(u.dec.o.payload)]

    def _fetch(self, m: Module, u: SimpleNamespace) -> None:
        """The index fetcher on the slot's tile, sharing the WGT read port with S1's raw reads
        (which come first), and feeding the decoder."""
        f, nx = u.fetcher, u.nx
        raw_rd = Signal()
        m.d.comb += [
            f.offer.eq(u.nx_valid & ~u.nx_claimed & u.nx_wfmt),
            f.wgt_base.eq(nx.wgt_base),
            f.active_cb.eq(u.a_valid & u.a_wfmt),
            raw_rd.eq(u.s1_en & ~u.s1_wfmt), f.raw_rd.eq(raw_rd),
            u.wgt.r_addr.eq(Mux(raw_rd, u.s1_wrow, f.wgt_addr)),
            f.wgt_data.eq(u.wgt.r_data),
            u.dec.d.eq(f.d), u.dec.k.eq(f.k),
            f.clear_error.eq(self.clear_error), self.error.eq(f.error),
        ]
        m.d.comb += [getattr(f, n).eq(getattr(nx, f"reg_{n}")) for n in FETCH_FIELDS]
        wiring.connect(m, f.idx, u.dec.i)
        with m.If(f.claim):
            m.d.sync += u.nx_claimed.eq(1)

    def _stage2(self, m: Module, u: SimpleNamespace) -> None:
        """S2: ACT bytes and the WGT row (or the decoded codes) to the array."""
        cfg = self._cfg
        array = u.array
        s2_en, s2_first, s2_load, s2_mode = Signal(), Signal(), Signal(), Signal(2)
        s2_ok = [Signal(name=f"s2_ok_{r}") for r in range(cfg.rows)]
        s2_wfmt = Signal()
        s2_code = Signal(u.dec.o.payload.shape())
        m.d.sync += [s2_en.eq(u.s1_en), s2_first.eq(u.s1_first), s2_load.eq(u.s1_load),
                     s2_mode.eq(u.s1_mode), s2_wfmt.eq(u.s1_wfmt), s2_code.eq(u.s1_code)]
        for r in range(cfg.rows):
            m.d.sync += s2_ok[r].eq(u.s1_ok[r])
            m.d.comb += [array.x[r].eq(u.act.r_data[r]), array.valid[r].eq(s2_ok[r])]
        for c in range(cfg.cols):
            # 2:1 mux per column: decoded code (WFMT=1) or the raw WGT byte
            m.d.comb += array.code[c].eq(Mux(s2_wfmt, s2_code[c],
                                             u.wgt.r_data.word_select(c, 8)))
        m.d.comb += [array.en.eq(s2_en), array.first.eq(s2_first), array.load.eq(s2_load),
                     array.mode.eq(s2_mode)]
        u.s2_en = s2_en
        u.s3_en = Signal()
        m.d.sync += u.s3_en.eq(s2_en)

    def _drain(self, m: Module, u: SimpleNamespace) -> None:
        """A draining tile's last step hands its job to the drain; the drain shifts the
        array's drain registers through the lanes into OUT."""
        d, array = u.drain, u.array
        m.d.comb += [
            d.req.eq(u.emit & u.is_last & u.a_drain),
            d.npix.eq(u.a_npix), d.col0.eq(u.a_col0), d.ncols.eq(u.a_ncols),
            d.relu.eq(u.a_flags[0]), d.resid.eq(u.a_flags[1]), d.bias_row.eq(u.a_bias_row),
            array.shift.eq(d.shift),
            u.bias.r_addr.eq(d.bias_addr), d.bias_data.eq(u.bias.r_data),
            u.res.r_addr.eq(d.res_addr),
            u.out.w_addr.eq(d.out_addr), u.out.w_en.eq(d.out_en),
        ]
        for r in range(self._cfg.rows):
            m.d.comb += d.oo[r].eq(u.a_oo[r])
        for c in range(self._cfg.cols):
            m.d.comb += [d.acc[c].eq(array.drain[c]), d.res_data[c].eq(u.res.r_data[c]),
                         u.out.w_data[c].eq(d.out_data[c])]
