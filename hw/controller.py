"""Instruction fetch, decode and issue; the memory port arbiter."""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.fifo import SyncFIFO
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig
from shiftbook.isa import FIELDS, INSN_BITS, Buf, Opcode, Reg

from .buffers import WordFIFO, is_ice40
from .layouts import compute_insn_layout, dma_insn_layout, field_slice
from .ports import ControlSignature, IssueSignature, MemPortSignature

__all__ = ["Arbiter", "Controller"]


class Arbiter(wiring.Component):
    """Shares the core's memory port between instruction fetch (priority; it only asks while
    its prefetch queue has room) and the DMA. The owner of each read waits in a FIFO until its
    response (responses come back in order).

    Parameters
    ----------
    bus_bytes : int
    depth : int
        Most reads in flight (sum of both requesters' limits).

    Members
    -------
    fetch : In(MemPortSignature(data_bits=8*bus_bytes, writes=False))
        The instruction fetch requester.
    dma : In(MemPortSignature(data_bits=8*bus_bytes))
        The DMA requester.
    mem : Out(MemPortSignature(data_bits=8*bus_bytes))
        The core's memory port.
    """

    def __init__(self, *, bus_bytes: int, depth: int):
        self._depth = depth
        w = 8 * bus_bytes
        super().__init__({"fetch": In(MemPortSignature(data_bits=w, writes=False)),
                          "dma": In(MemPortSignature(data_bits=w)),
                          "mem": Out(MemPortSignature(data_bits=w))})

    def elaborate(self, platform):
        m = Module()
        owner = m.submodules.owner = SyncFIFO(width=1, depth=self._depth)
        f, d, mem = self.fetch, self.dma, self.mem
        fetch = f.cmd_valid
        with m.If(fetch):
            m.d.comb += [mem.cmd_addr.eq(f.cmd_addr), mem.cmd_we.eq(0)]
        with m.Else():
            m.d.comb += [mem.cmd_addr.eq(d.cmd_addr), mem.cmd_we.eq(d.cmd_we)]
        m.d.comb += [mem.cmd_valid.eq(f.cmd_valid | d.cmd_valid),
                     mem.cmd_wdata.eq(d.cmd_wdata),
                     f.cmd_ready.eq(mem.cmd_ready),
                     d.cmd_ready.eq(mem.cmd_ready & ~fetch),
                     owner.w_en.eq(mem.cmd_valid & mem.cmd_ready & ~mem.cmd_we),
                     owner.w_data.eq(fetch),
                     owner.r_en.eq(mem.rsp_valid),
                     f.rsp_valid.eq(mem.rsp_valid & owner.r_data[0]),
                     d.rsp_valid.eq(mem.rsp_valid & ~owner.r_data[0]),
                     f.rsp_data.eq(mem.rsp_data), d.rsp_data.eq(mem.rsp_data)]
        return m


class Controller(wiring.Component):
    """Fetches 128-bit instructions from word 0 (prefetching up to ``mem_latency + 2*insn``
    words ahead), decodes them with ``shiftbook.isa.FIELDS``, executes SET/SYNC/MARK/END/NOP and
    issues LOAD/STORE to the DMA and COMPUTE to the compute unit. An unknown opcode, a SET of
    an unknown register, a LOAD to OUT or to a buffer past CB, a STORE from another buffer, or
    the compute unit's ``cu_error`` raise ``error`` and stop.

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    start : In(1)
        Pulse: clear done/error, then fetch from word 0 once no fetch of a previous run is
        in flight (a start while running waits for that run to stop).
    busy, done, error : Out(1)
        Running (or a start pending); stopped at END; stopped on an illegal instruction.
    cycles : Out(48)
        Cycles since start (frozen when stopped).
    mark_valid : Out(1), mark_id : Out(16)
        (``start`` .. ``cycles`` are the members of ``ControlSignature``.)
    mem : Out(MemPortSignature(data_bits=8*bus_bytes, writes=False))
        Fetch requester port (to the arbiter).
    dma : Out(IssueSignature(dma_insn_layout()))
        LOAD/STORE issue to the DMA.
    cu : Out(IssueSignature(compute_insn_layout(cfg)))
        COMPUTE issue (fields and the layer registers) to the compute unit.
    cu_error : In(1), cu_clear : Out(1)
        The compute unit's error (an out-of-range codebook index) stops the run with
        ``error``; ``cu_clear`` pulses when a run starts (clears it).
    """

    def __init__(self, cfg: CoreConfig):
        self._cfg = cfg
        b = cfg.bus_bytes
        self._wpi = max(1, 16 // b)              # words per instruction
        self._ipw = max(1, b // 16)              # instructions per word
        self._depth = cfg.mem_latency + 2 * self._wpi + 1
        super().__init__({
            **ControlSignature().members,
            "mem": Out(MemPortSignature(data_bits=8 * b, writes=False)),
            "dma": Out(IssueSignature(dma_insn_layout())),
            "cu": Out(IssueSignature(compute_insn_layout(cfg))),
            "cu_error": In(1), "cu_clear": Out(1),
        })

    @property
    def fetch_depth(self) -> int:
        return self._depth

    def elaborate(self, platform):
        m = Module()
        c = SimpleNamespace(running=Signal(name="running"), pop=Signal(name="pop"),
                            ir=Signal(INSN_BITS, name="ir"), ir_valid=Signal(name="ir_valid"),
                            consume=Signal(name="consume"))
        self._fetch(m, c, platform)
        self._assemble(m, c)
        self._registers(m, c)
        self._execute(m, c)
        return m

    def _fetch(self, m: Module, c: SimpleNamespace, platform) -> None:
        """Prefetch: words requested while the queue has room (credits), queued in order."""
        B = self._cfg.bus_bytes
        running = c.running
        # (block RAM on iCE40, where an asynchronously read FIFO would be flip-flops)
        words = m.submodules.words = WordFIFO(width=8 * B, depth=self._depth,
                                              ram_style="block" if is_ice40(platform) else None)
        credits = Signal(range(self._depth + 1), init=self._depth)
        f_addr = Signal(28)
        m.d.comb += [self.mem.cmd_valid.eq(running & (credits != 0)),
                     self.mem.cmd_addr.eq(f_addr),
                     words.w_en.eq(self.mem.rsp_valid), words.w_data.eq(self.mem.rsp_data)]
        f_acc = Signal()
        m.d.comb += f_acc.eq(self.mem.cmd_valid & self.mem.cmd_ready)
        with m.If(f_acc):
            m.d.sync += f_addr.eq(f_addr + 1)
        m.d.sync += credits.eq(credits - f_acc + (words.r_en & words.r_rdy))
        c.words, c.credits, c.f_addr = words, credits, f_addr

    def _assemble(self, m: Module, c: SimpleNamespace) -> None:
        """128-bit instructions from the queued words, for any bus width."""
        B = self._cfg.bus_bytes
        running, words, pop = c.running, c.words, c.pop
        ir, ir_valid, consume = c.ir, c.ir_valid, c.consume
        if self._ipw == 1 and self._wpi == 1:
            move = Signal()
            m.d.comb += [move.eq(words.r_rdy & (~ir_valid | consume)), pop.eq(move)]
            with m.If(move):
                m.d.sync += [ir.eq(words.r_data), ir_valid.eq(1)]
            with m.Elif(consume):
                m.d.sync += ir_valid.eq(0)
        elif self._ipw > 1:
            idx = Signal(range(self._ipw))
            move = Signal()
            m.d.comb += move.eq(words.r_rdy & (~ir_valid | consume))
            with m.If(move):
                m.d.sync += [ir.eq(words.r_data.word_select(idx, INSN_BITS)), ir_valid.eq(1),
                             idx.eq(idx + 1)]
                with m.If(idx == self._ipw - 1):
                    m.d.sync += idx.eq(0)
                    m.d.comb += pop.eq(1)
            with m.Elif(consume):
                m.d.sync += ir_valid.eq(0)
        else:
            wpi = self._wpi
            asm = Signal(INSN_BITS)
            cnt = Signal(range(wpi + 1))
            move = Signal()
            m.d.comb += [move.eq((cnt == wpi) & (~ir_valid | consume)),
                         pop.eq(words.r_rdy & ((cnt != wpi) | move))]
            with m.If(move):
                m.d.sync += [ir.eq(asm), ir_valid.eq(1)]
            with m.Elif(consume):
                m.d.sync += ir_valid.eq(0)
            with m.If(pop):
                m.d.sync += asm.eq(Cat(asm[8 * B:], words.r_data))
            m.d.sync += cnt.eq((cnt & ~move.replicate(len(cnt))) + pop)
            with m.If(~running):
                m.d.sync += cnt.eq(0)
        # When stopped, drain whatever the prefetch brought.
        m.d.comb += words.r_en.eq(pop | ~running)
        with m.If(~running):
            m.d.sync += ir_valid.eq(0)
            if self._ipw > 1:
                m.d.sync += idx.eq(0)

    def _registers(self, m: Module, c: SimpleNamespace) -> None:
        """The layer registers and the issue payloads (fields cut from ``ir``)."""
        ir = c.ir
        # Each layer register keeps only the bits the config can use (the width of its
        # ``cu_insn`` field, shiftbook.fields); SET drops the rest, and the
        # compiler never emits a value that would lose bits there.
        regs = {}
        cu_insn, dma_insn = self.cu.insn.payload, self.dma.insn.payload
        for reg in Reg:
            key = f"reg_{reg.name.lower()}"
            regs[reg] = Signal(len(getattr(cu_insn, key)), name=key)
            m.d.comb += getattr(cu_insn, key).eq(regs[reg])
        for name in FIELDS[Opcode.COMPUTE]:
            m.d.comb += getattr(cu_insn, name).eq(field_slice(ir, Opcode.COMPUTE, name))
        for name in FIELDS[Opcode.LOAD]:
            m.d.comb += getattr(dma_insn, name).eq(field_slice(ir, Opcode.LOAD, name))
        op = ir[:4]
        m.d.comb += dma_insn.store.eq(op == Opcode.STORE)
        c.regs, c.op = regs, op

    def _execute(self, m: Module, c: SimpleNamespace) -> None:
        """Start, the cycle counter, and executing (or issuing) the instruction in ``ir``."""
        running, words, credits, f_addr = c.running, c.words, c.credits, c.f_addr
        ir, ir_valid, consume, regs, op = c.ir, c.ir_valid, c.consume, c.regs, c.op
        cycles = Signal(48)
        m.d.comb += self.cycles.eq(cycles)
        with m.If(running):
            m.d.sync += cycles.eq(cycles + 1)
        m.d.sync += self.mark_valid.eq(0)
        # A start waits (at most mem_latency cycles) until no fetch of a previous run is in
        # flight, so stale prefetched words never become instructions of the new run.
        start_pending = Signal()
        go = Signal()
        m.d.comb += self.busy.eq(running | start_pending)
        m.d.comb += go.eq((self.start | start_pending) & ~running &
                          (credits == self._depth) & ~words.r_rdy)
        m.d.comb += self.cu_clear.eq(go)
        with m.If(go):
            m.d.sync += [running.eq(1), self.done.eq(0), self.error.eq(0), cycles.eq(0),
                         f_addr.eq(0), start_pending.eq(0)]
        with m.Elif(self.start):
            m.d.sync += [start_pending.eq(1), self.done.eq(0), self.error.eq(0)]
        buf = field_slice(ir, Opcode.LOAD, "buf")
        reg = field_slice(ir, Opcode.SET, "reg")
        value = field_slice(ir, Opcode.SET, "value")
        mask = field_slice(ir, Opcode.SYNC, "mask")
        stop_error = Signal()
        with m.If(running & ir_valid):
            with m.Switch(op):
                with m.Case(Opcode.NOP):
                    m.d.comb += consume.eq(1)
                with m.Case(Opcode.SET):
                    with m.Switch(reg):
                        for r, s in regs.items():
                            with m.Case(r):
                                m.d.sync += s.eq(value)
                                m.d.comb += consume.eq(1)
                        with m.Default():
                            m.d.comb += stop_error.eq(1)
                with m.Case(Opcode.LOAD):
                    with m.If((buf == Buf.OUT) | (buf > Buf.CB)):
                        m.d.comb += stop_error.eq(1)
                    with m.Else():
                        m.d.comb += [self.dma.insn.valid.eq(1), consume.eq(self.dma.insn.ready)]
                with m.Case(Opcode.STORE):
                    with m.If(buf != Buf.OUT):
                        m.d.comb += stop_error.eq(1)
                    with m.Else():
                        m.d.comb += [self.dma.insn.valid.eq(1), consume.eq(self.dma.insn.ready)]
                with m.Case(Opcode.COMPUTE):
                    m.d.comb += [self.cu.insn.valid.eq(1), consume.eq(self.cu.insn.ready)]
                with m.Case(Opcode.SYNC):
                    m.d.comb += consume.eq(~(mask[0] & self.dma.busy) &
                                           ~(mask[1] & self.cu.busy))
                with m.Case(Opcode.MARK):
                    m.d.comb += consume.eq(1)
                    m.d.sync += [self.mark_valid.eq(1),
                                 self.mark_id.eq(field_slice(ir, Opcode.MARK, "id"))]
                with m.Case(Opcode.END):
                    with m.If(~self.dma.busy & ~self.cu.busy):
                        m.d.sync += [running.eq(0), self.done.eq(1)]
                with m.Default():
                    m.d.comb += stop_error.eq(1)
        # The compute unit's error (a codebook index >= CB_K) stops the run like an illegal
        # instruction.
        with m.If(running & self.cu_error):
            m.d.comb += stop_error.eq(1)
        with m.If(stop_error):
            m.d.sync += [running.eq(0), self.error.eq(1)]
