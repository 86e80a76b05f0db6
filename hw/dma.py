"""The 2-D LOAD/STORE engine over the external memory port (docs/isa.md LOAD, STORE)."""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig
from shiftbook.isa import Buf

from .layouts import dma_insn_layout
from .ports import BufferPortSignature, IssueSignature, MemPortSignature

__all__ = ["DMA"]


class DMA(wiring.Component):
    """Walks ``for r in runs: for w in words`` over external and buffer word addresses with
    adders only, one word per cycle.

    Loads keep up to ``mem_latency + 2`` reads in flight (the buffer word address of each read
    waits in a FIFO for its response), so a long run streams at one word per cycle; the walker
    accepts the next instruction as soon as it has issued the last request of the current one.
    Stores read OUT one cycle ahead of the write request (a 2-stage pipeline that holds its
    word while ``cmd_ready`` is low).

    ``LOAD CB`` (``buf = Buf.CB``) reads its words the same way into a word queue (reads are
    issued only while the queue has room for their responses). Each cycle the codebook writer
    writes the head word's bytes up to the end of the word or of the current codeword into
    codebook row ``row`` from position ``col`` of every decoder lane (``col`` wraps at
    ``CB_D``, ``row`` counts up: no divider), so a word takes one cycle per codeword it
    touches. Bytes past ``CB_K * CB_D`` are dropped. The next instruction is accepted once
    the codebook writer is done.

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    issue : In(IssueSignature(dma_insn_layout()))
        LOAD/STORE issue; ``issue.busy``: walking, reads in flight, or a store word pending
        (SYNC bit 0).
    mem : Out(MemPortSignature(data_bits=8*bus_bytes))
        The memory requester port (this unit's share of the core's port).
    buf : Out(BufferPortSignature(...))
        Buffer writes of load responses (``wr_*``, ``wr_buf`` as ``shiftbook.isa.Buf``), OUT
        reads for stores (``out_r_*``, latency 1, data held while ``out_r_en`` is low) and the
        decoder's codebook write port (``cb_*``: row, ``max_d`` codes, one enable bit per code).
    cb_d, cb_k : In(32)
        The ``CB_D`` and ``CB_K`` layer registers (latched when a LOAD CB is accepted).
    """

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        self._depth = cfg.mem_latency + 2
        b = cfg.bus_bytes
        self._ib = cfg.index_bits_max
        super().__init__({
            "issue": In(IssueSignature(dma_insn_layout())),
            "mem": Out(MemPortSignature(data_bits=8 * b)),
            "buf": Out(BufferPortSignature(data_bits=8 * b, cb_addr_bits=self._ib,
                                           code_bits=cfg.code_bits, max_d=cfg.max_d)),
            "cb_d": In(32), "cb_k": In(32),
        })

    @property
    def inflight_depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        B = cfg.bus_bytes
        mem, bp = self.mem, self.buf
        fifo = m.submodules.inflight = SyncFIFO(width=3 + 22, depth=self._depth)
        # LOAD CB: response words wait here for the codebook writer (one code per cycle).
        cbq = m.submodules.cb_words = SyncFIFO(width=8 * B, depth=self._depth)
        cb_count = Signal(range(self._depth + 1))   # CB reads issued, words not yet consumed
        cb_busy = Signal()
        m.d.comb += cb_busy.eq(cb_count != 0)

        active, store, cb = Signal(), Signal(), Signal()
        buf = Signal(2)
        ext_run, ext_cur = Signal(28), Signal(28)
        buf_run, buf_cur = Signal(22), Signal(22)
        words1, runs1 = Signal(16), Signal(16)   # words - 1, runs - 1
        ext_stride, buf_stride = Signal(20), Signal(18)
        w_cnt, r_cnt = Signal(16), Signal(16)
        walk = Signal()      # issuing requests

        s1_valid = Signal()
        s1_addr = Signal(28)

        ins = self.issue.insn.payload
        cb_dd = Signal(range(1, cfg.max_d + 1))   # CB_D (out of range: max_d, as the decoder)
        cb_k = Signal(self._ib + 1)
        cb_row = Signal(self._ib + 1)
        cb_col = Signal(range(cfg.max_d))
        m.d.comb += self.issue.insn.ready.eq(~active & ~cb_busy)
        with m.If(self.issue.insn.valid & ~active & ~cb_busy):
            m.d.sync += [active.eq((ins.words != 0) & (ins.runs != 0)), store.eq(ins.store),
                         cb.eq(ins.buf == Buf.CB), cb_row.eq(0), cb_col.eq(0),
                         cb_dd.eq(Mux((self.cb_d == 0) | (self.cb_d > cfg.max_d), cfg.max_d,
                                      self.cb_d)),
                         cb_k.eq(Mux(self.cb_k > cfg.max_k, cfg.max_k, self.cb_k)),
                         buf.eq(ins.buf[:2]), ext_run.eq(ins.ext_addr), ext_cur.eq(ins.ext_addr),
                         buf_run.eq(ins.buf_addr), buf_cur.eq(ins.buf_addr),
                         words1.eq(ins.words - 1), runs1.eq(ins.runs - 1),
                         ext_stride.eq(ins.ext_stride), buf_stride.eq(ins.buf_stride),
                         w_cnt.eq(0), r_cnt.eq(0)]

        m.d.comb += walk.eq(active)
        inc = 1
        run_step = buf_stride

        step = Signal()   # the walker advances one word
        with m.If(step):
            with m.If(w_cnt == words1):
                m.d.sync += [w_cnt.eq(0), r_cnt.eq(r_cnt + 1),
                             ext_run.eq(ext_run + ext_stride),
                             ext_cur.eq(ext_run + ext_stride),
                             buf_run.eq(buf_run + run_step),
                             buf_cur.eq(buf_run + run_step)]
                with m.If(r_cnt == runs1):
                    m.d.sync += active.eq(0)
            with m.Else():
                m.d.sync += [w_cnt.eq(w_cnt + 1), ext_cur.eq(ext_cur + 1),
                             buf_cur.eq(buf_cur + inc)]

        # Store pipeline: S0 reads OUT, S1 presents the write.
        accept = Signal()
        m.d.comb += accept.eq(mem.cmd_valid & mem.cmd_ready)
        adv = Signal()
        m.d.comb += adv.eq(walk & store & (~s1_valid | accept))
        m.d.comb += [bp.out_r_en.eq(adv), bp.out_r_addr.eq(buf_cur)]
        with m.If(adv):
            m.d.sync += [s1_valid.eq(1), s1_addr.eq(ext_cur)]
        with m.Elif(accept & s1_valid):
            m.d.sync += s1_valid.eq(0)

        # Command mux: a pending store word first, else a load read.
        with m.If(s1_valid):
            m.d.comb += [mem.cmd_valid.eq(1), mem.cmd_we.eq(1), mem.cmd_addr.eq(s1_addr),
                         mem.cmd_wdata.eq(bp.out_r_data)]
            m.d.comb += step.eq(adv)
        with m.Else():
            m.d.comb += [mem.cmd_valid.eq(walk & ~store & fifo.w_rdy &
                                           (~cb | (cb_count != self._depth))),
                         mem.cmd_addr.eq(ext_cur)]
            m.d.comb += step.eq(adv | (accept & ~store))
        m.d.comb += [fifo.w_en.eq(accept & ~mem.cmd_we),
                     fifo.w_data.eq(buf | (cb << 2) | (buf_cur << 3))]

        # Load responses: buffer writes, or codebook words into the queue.
        rsp_cb = fifo.r_data[2]
        m.d.comb += [fifo.r_en.eq(mem.rsp_valid),
                     bp.wr_en.eq(mem.rsp_valid & ~rsp_cb), bp.wr_buf.eq(fifo.r_data[:2]),
                     bp.wr_addr.eq(fifo.r_data[3:]), bp.wr_data.eq(mem.rsp_data),
                     cbq.w_en.eq(mem.rsp_valid & rsp_cb), cbq.w_data.eq(mem.rsp_data)]

        pop = self._codebook_writer(m, cbq, cb_dd, cb_k, cb_row, cb_col)
        cb_issue = Signal()
        m.d.comb += cb_issue.eq(accept & ~mem.cmd_we & cb & ~s1_valid)
        m.d.sync += cb_count.eq(cb_count + cb_issue - pop)

        m.d.comb += self.issue.busy.eq(active | s1_valid | fifo.r_rdy | cb_busy)
        return m

    def _codebook_writer(self, m: Module, cbq, cb_dd, cb_k, cb_row, cb_col) -> Signal:
        """Writes the queued LOAD CB words into the decoder's codebook; returns ``pop`` (the
        head word is done this cycle)."""
        cfg = self._cfg
        B = cfg.bus_bytes
        bp = self.buf
        # Codebook writer: each cycle one segment of the queue's head word, from byte `cb_byte`
        # to the end of the word or of the codeword, whichever comes first, goes to positions
        # cb_col.. of codebook row cb_row (so a word takes one cycle per codeword it touches).
        cb_byte = Signal(range(B)) if B > 1 else Const(0, 1)
        rem_w = Signal(range(B + 1))
        rem_r = Signal(range(cfg.max_d + 1))
        n = Signal(range(max(B, cfg.max_d) + 1))
        m.d.comb += [rem_w.eq(B - cb_byte), rem_r.eq(cb_dd - cb_col),
                     n.eq(Mux(rem_w < rem_r, rem_w, rem_r))]
        word_sh = Signal(8 * B)
        m.d.comb += word_sh.eq(cbq.r_data >> Cat(Const(0, 3), cb_byte))
        cbits = cfg.code_bits
        codes = Cat(*[word_sh[8 * i:8 * i + cbits] for i in range(min(B, cfg.max_d))])
        placed = Signal(cbits * cfg.max_d)
        with m.Switch(cb_col):
            for c in range(cfg.max_d):
                with m.Case(c):
                    m.d.comb += placed.eq(codes << (c * cbits))
        mask = Signal(cfg.max_d)
        m.d.comb += mask.eq(((Const(1, cfg.max_d + B + 1) << n) - 1) << cb_col)
        pop = Signal()
        m.d.comb += [pop.eq(cbq.r_rdy & (n == rem_w)), cbq.r_en.eq(pop),
                     bp.cb_addr.eq(cb_row), bp.cb_data.eq(placed)]
        with m.If(cbq.r_rdy):
            with m.If(cb_row < cb_k):
                m.d.comb += bp.cb_en.eq(mask)
            with m.If(n == rem_r):
                m.d.sync += [cb_col.eq(0), cb_row.eq(cb_row + 1)]
            with m.Else():
                m.d.sync += cb_col.eq(cb_col + n)
            if B > 1:
                m.d.sync += cb_byte.eq(Mux(pop, 0, cb_byte + n))
        return pop


assert Buf.ACT == 0 and Buf.WGT == 1 and Buf.BIAS == 2 and Buf.RES == 3 and Buf.CB == 5
