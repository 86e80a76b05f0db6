"""The 2-D LOAD/STORE engine over the external memory port (docs/isa.md LOAD, STORE)."""

from __future__ import annotations

from types import SimpleNamespace

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
        d = self._signals()
        d.fifo = m.submodules.inflight = SyncFIFO(width=3 + 22, depth=self._depth)
        # LOAD CB: response words wait here for the codebook writer (one code per cycle).
        d.cbq = m.submodules.cb_words = SyncFIFO(width=8 * self._cfg.bus_bytes, depth=self._depth)
        m.d.comb += d.cb_busy.eq(d.cb_count != 0)
        self._accept(m, d)
        self._walker(m, d)
        self._requests(m, d)
        self._responses(m, d)
        pop = self._codebook_writer(m, d.cbq, d.cb_dd, d.cb_k, d.cb_row, d.cb_col)
        cb_issue = Signal()
        m.d.comb += cb_issue.eq(d.accept & ~self.mem.cmd_we & d.cb & ~d.s1_valid)
        m.d.sync += d.cb_count.eq(d.cb_count + cb_issue - pop)
        m.d.comb += self.issue.busy.eq(d.active | d.s1_valid | d.fifo.r_rdy | d.cb_busy)
        return m

    def _signals(self) -> SimpleNamespace:
        """The walker's registers and the handshake signals shared by the sections."""
        cfg = self._cfg
        shapes = dict(
            cb_count=range(self._depth + 1),   # CB reads issued, words not yet consumed
            cb_busy=1, active=1, store=1, cb=1, buf=2,
            ext_run=28, ext_cur=28, buf_run=22, buf_cur=22,
            words1=16, runs1=16,               # words - 1, runs - 1
            ext_stride=20, buf_stride=18, w_cnt=16, r_cnt=16,
            walk=1,                            # issuing requests
            s1_valid=1, s1_addr=28,            # the store word presented to memory
            cb_dd=range(1, cfg.max_d + 1),     # CB_D (out of range: max_d, as the decoder)
            cb_k=self._ib + 1, cb_row=self._ib + 1, cb_col=range(cfg.max_d),
            step=1,                            # the walker advances one word
            accept=1, adv=1)                   # memory took a request; the store pipe moves
        return SimpleNamespace(**{k: Signal(v, name=k) for k, v in shapes.items()})

    def _accept(self, m: Module, d: SimpleNamespace) -> None:
        """Take the next instruction once the walk and the codebook writer are done."""
        cfg = self._cfg
        ins = self.issue.insn.payload
        m.d.comb += self.issue.insn.ready.eq(~d.active & ~d.cb_busy)
        with m.If(self.issue.insn.valid & ~d.active & ~d.cb_busy):
            m.d.sync += [d.active.eq((ins.words != 0) & (ins.runs != 0)), d.store.eq(ins.store),
                         d.cb.eq(ins.buf == Buf.CB), d.cb_row.eq(0), d.cb_col.eq(0),
                         d.cb_dd.eq(Mux((self.cb_d == 0) | (self.cb_d > cfg.max_d), cfg.max_d,
                                        self.cb_d)),
                         d.cb_k.eq(Mux(self.cb_k > cfg.max_k, cfg.max_k, self.cb_k)),
                         d.buf.eq(ins.buf[:2]),
                         d.ext_run.eq(ins.ext_addr), d.ext_cur.eq(ins.ext_addr),
                         d.buf_run.eq(ins.buf_addr), d.buf_cur.eq(ins.buf_addr),
                         d.words1.eq(ins.words - 1), d.runs1.eq(ins.runs - 1),
                         d.ext_stride.eq(ins.ext_stride), d.buf_stride.eq(ins.buf_stride),
                         d.w_cnt.eq(0), d.r_cnt.eq(0)]

    def _walker(self, m: Module, d: SimpleNamespace) -> None:
        """``for r in runs: for w in words``: one word per ``step``, with adders only."""
        m.d.comb += d.walk.eq(d.active)
        with m.If(d.step):
            with m.If(d.w_cnt == d.words1):
                m.d.sync += [d.w_cnt.eq(0), d.r_cnt.eq(d.r_cnt + 1),
                             d.ext_run.eq(d.ext_run + d.ext_stride),
                             d.ext_cur.eq(d.ext_run + d.ext_stride),
                             d.buf_run.eq(d.buf_run + d.buf_stride),
                             d.buf_cur.eq(d.buf_run + d.buf_stride)]
                with m.If(d.r_cnt == d.runs1):
                    m.d.sync += d.active.eq(0)
            with m.Else():
                m.d.sync += [d.w_cnt.eq(d.w_cnt + 1), d.ext_cur.eq(d.ext_cur + 1),
                             d.buf_cur.eq(d.buf_cur + 1)]

    def _requests(self, m: Module, d: SimpleNamespace) -> None:
        """The store pipeline (S0 reads OUT, S1 presents the write) and the command mux: a
        pending store word first, else a load read (its buffer address into the FIFO)."""
        mem, bp, fifo, s1_valid = self.mem, self.buf, d.fifo, d.s1_valid
        m.d.comb += d.accept.eq(mem.cmd_valid & mem.cmd_ready)
        m.d.comb += d.adv.eq(d.walk & d.store & (~s1_valid | d.accept))
        m.d.comb += [bp.out_r_en.eq(d.adv), bp.out_r_addr.eq(d.buf_cur)]
        with m.If(d.adv):
            m.d.sync += [s1_valid.eq(1), d.s1_addr.eq(d.ext_cur)]
        with m.Elif(d.accept & s1_valid):
            m.d.sync += s1_valid.eq(0)

        with m.If(s1_valid):
            m.d.comb += [mem.cmd_valid.eq(1), mem.cmd_we.eq(1), mem.cmd_addr.eq(d.s1_addr),
                         mem.cmd_wdata.eq(bp.out_r_data)]
            m.d.comb += d.step.eq(d.adv)
        with m.Else():
            m.d.comb += [mem.cmd_valid.eq(d.walk & ~d.store & fifo.w_rdy &
                                          (~d.cb | (d.cb_count != self._depth))),
                         mem.cmd_addr.eq(d.ext_cur)]
            m.d.comb += d.step.eq(d.adv | (d.accept & ~d.store))
        m.d.comb += [fifo.w_en.eq(d.accept & ~mem.cmd_we),
                     fifo.w_data.eq(d.buf | (d.cb << 2) | (d.buf_cur << 3))]

    def _responses(self, m: Module, d: SimpleNamespace) -> None:
        """Load responses: buffer writes, or codebook words into the queue."""
        mem, bp, fifo, cbq = self.mem, self.buf, d.fifo, d.cbq
        rsp_cb = fifo.r_data[2]
        m.d.comb += [fifo.r_en.eq(mem.rsp_valid),
                     bp.wr_en.eq(mem.rsp_valid & ~rsp_cb), bp.wr_buf.eq(fifo.r_data[:2]),
                     bp.wr_addr.eq(fifo.r_data[3:]), bp.wr_data.eq(mem.rsp_data),
                     cbq.w_en.eq(mem.rsp_valid & rsp_cb), cbq.w_data.eq(mem.rsp_data)]

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
