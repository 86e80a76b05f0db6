"""The 2-D LOAD/STORE engine over the external memory port (docs/isa.md LOAD, STORE)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig
from shiftbook.isa import Buf

from .layouts import dma_insn_layout

__all__ = ["DMA"]


class DMA(wiring.Component):
    """Walks ``for r in runs: for w in words`` over external and buffer word addresses with
    adders only, one word per cycle.

    Loads keep up to ``mem_latency + 2`` reads in flight (the buffer word address of each read
    waits in a FIFO for its response), so a long run streams at one word per cycle; the walker
    accepts the next instruction as soon as it has issued the last request of the current one.
    Stores read OUT one cycle ahead of the write request (a 2-stage pipeline that holds its
    word while ``cmd_ready`` is low).

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    insn_valid : In(1), insn_ready : Out(1), insn : In(dma_insn_layout())
        LOAD/STORE issue.
    busy : Out(1)
        Walking, reads in flight, or a store word pending (SYNC bit 0).
    cmd_valid, cmd_ready, cmd_addr, cmd_we, cmd_wdata, rsp_valid, rsp_data
        The memory requester port (this unit's share of the core's port).
    wr_en, wr_buf, wr_addr, wr_data : Out
        Buffer writes of load responses (``wr_buf`` as ``shiftbook.isa.Buf``).
    out_r_en, out_r_addr : Out, out_r_data : In
        OUT reads for stores (latency 1, data held while ``out_r_en`` is low).
    """

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        self._depth = cfg.mem_latency + 2
        b = cfg.bus_bytes
        super().__init__({
            "insn_valid": In(1), "insn_ready": Out(1), "insn": In(dma_insn_layout()),
            "busy": Out(1),
            "cmd_valid": Out(1), "cmd_ready": In(1), "cmd_addr": Out(28), "cmd_we": Out(1),
            "cmd_wdata": Out(8 * b), "rsp_valid": In(1), "rsp_data": In(8 * b),
            "wr_en": Out(1), "wr_buf": Out(2), "wr_addr": Out(22), "wr_data": Out(8 * b),
            "out_r_en": Out(1), "out_r_addr": Out(22), "out_r_data": In(8 * b),
        })

    @property
    def inflight_depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        fifo = m.submodules.inflight = SyncFIFO(width=2 + 22, depth=self._depth)

        active, store = Signal(), Signal()
        buf = Signal(2)
        ext_run, ext_cur = Signal(28), Signal(28)
        buf_run, buf_cur = Signal(22), Signal(22)
        words1, runs1 = Signal(16), Signal(16)   # words - 1, runs - 1
        ext_stride, buf_stride = Signal(20), Signal(18)
        w_cnt, r_cnt = Signal(16), Signal(16)
        walk = Signal()      # issuing requests

        s1_valid = Signal()
        s1_addr = Signal(28)

        ins = self.insn
        m.d.comb += self.insn_ready.eq(~active)
        with m.If(self.insn_valid & ~active):
            m.d.sync += [active.eq((ins.words != 0) & (ins.runs != 0)), store.eq(ins.store),
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
        m.d.comb += accept.eq(self.cmd_valid & self.cmd_ready)
        adv = Signal()
        m.d.comb += adv.eq(walk & store & (~s1_valid | accept))
        m.d.comb += [self.out_r_en.eq(adv), self.out_r_addr.eq(buf_cur)]
        with m.If(adv):
            m.d.sync += [s1_valid.eq(1), s1_addr.eq(ext_cur)]
        with m.Elif(accept & s1_valid):
            m.d.sync += s1_valid.eq(0)

        # Command mux: a pending store word first, else a load read.
        with m.If(s1_valid):
            m.d.comb += [self.cmd_valid.eq(1), self.cmd_we.eq(1), self.cmd_addr.eq(s1_addr),
                         self.cmd_wdata.eq(self.out_r_data)]
            m.d.comb += step.eq(adv)
        with m.Else():
            m.d.comb += [self.cmd_valid.eq(walk & ~store & fifo.w_rdy),
                         self.cmd_addr.eq(ext_cur)]
            m.d.comb += step.eq(adv | (accept & ~store))
        m.d.comb += [fifo.w_en.eq(accept & ~self.cmd_we),
                     fifo.w_data.eq(buf | (buf_cur << 2))]

        # Load responses.
        m.d.comb += [fifo.r_en.eq(self.rsp_valid),
                     self.wr_en.eq(self.rsp_valid), self.wr_buf.eq(fifo.r_data[:2]),
                     self.wr_addr.eq(fifo.r_data[2:]), self.wr_data.eq(self.rsp_data)]

        m.d.comb += self.busy.eq(active | s1_valid | fifo.r_rdy)
        return m


assert Buf.ACT == 0 and Buf.WGT == 1 and Buf.BIAS == 2 and Buf.RES == 3
