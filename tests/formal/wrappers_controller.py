"""Test-only wrapper: the controller's hazard rule (docs/isa.md "SYNC mask").

The program is symbolic: ``P`` instruction words, each an arbitrary NOP, LOAD, SYNC (any mask)
or COMPUTE with arbitrary fields, then END. Memory answers fetches in order after any delay,
the DMA takes each LOAD whenever it likes and finishes its LOADs in order at arbitrary times,
the compute unit accepts COMPUTEs whenever it likes. The assertion: a COMPUTE that follows a
``SYNC`` with the DMA bit, with no DMA operation between them in the program, issues only
after every DMA operation before that SYNC has finished, so it never reads a buffer slot a
LOAD is still writing (the compiler's SYNCs then make the slots safe, docs/bundle.md).
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Assert, Assume, Const, Elaboratable, Module, Mux, ResetSignal, Signal

from shiftbook.config import CoreConfig
from shiftbook.hw.controller import Controller
from shiftbook.isa import Insn, Opcode, SyncMask, encode

__all__ = ["ControllerSpec", "BrokenController"]


class BrokenController(Controller):
    """A deliberately broken controller (test-only mutation): its SYNC and END never see the
    DMA busy, so a COMPUTE may overtake a running LOAD."""

    def _execute(self, m, c):
        real = self.dma
        self.dma = SimpleNamespace(insn=real.insn, busy=Const(0))
        try:
            super()._execute(m, c)
        finally:
            self.dma = real


class ControllerSpec(Elaboratable):
    """A controller on a 16-byte bus (one instruction per word) and the hazard assertion."""

    def __init__(self, *, program_len: int = 4, broken: bool = False) -> None:
        cls = BrokenController if broken else Controller
        self.dut = cls(CoreConfig(bus_bytes=16))
        self.P = program_len
        self.inputs = dict(prog=[Signal(128, name=f"prog_{p}") for p in range(program_len)],
                           cmd_ready=Signal(), rsp_valid=Signal(), dma_ready=Signal(),
                           dma_finish=Signal(), cu_ready=Signal(), cu_busy=Signal())

    @property
    def ports(self) -> list[Signal]:
        i = self.inputs
        return [*i["prog"], *(v for k, v in i.items() if k != "prog")]

    def _program(self, m: Module) -> list[SimpleNamespace]:
        """Hold the program fixed and restrict its opcodes; per position: what it is, how
        many COMPUTEs precede it, and whether a SYNC DMA guards it (and after how many DMA
        operations that SYNC came)."""
        armed = Signal()
        m.d.sync += armed.eq(1)
        pos = []
        n_dma, n_cu = Const(0, 4), Const(0, 4)
        guard, guard_n = Const(0, 1), Const(0, 4)
        for w in self.inputs["prog"]:
            held = Signal.like(w, name=f"held_{w.name}")
            m.d.sync += held.eq(w)
            with m.If(armed):
                m.d.comb += Assume(w == held)
            op = w[:4]
            m.d.comb += Assume((op == Opcode.NOP) | (op == Opcode.LOAD) | (op == Opcode.SYNC)
                               | (op == Opcode.COMPUTE))
            p = SimpleNamespace(compute=op == Opcode.COMPUTE, n_cu=n_cu, guard=guard,
                                guard_n=guard_n)
            pos.append(p)
            is_dma = op == Opcode.LOAD
            sync_dma = (op == Opcode.SYNC) & w[4 + (SyncMask.DMA.bit_length() - 1)]
            guard = Mux(sync_dma, 1, Mux(is_dma, 0, guard))
            guard_n = Mux(sync_dma, n_dma, guard_n)
            n_dma = (n_dma + is_dma)[:4]
            n_cu = (n_cu + p.compute)[:4]
        return pos

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        i = self.inputs
        m.d.comb += Assume(~ResetSignal())
        pos = self._program(m)
        started = Signal()
        m.d.sync += started.eq(1)
        m.d.comb += [dut.start.eq(~started), dut.cu_error.eq(0)]
        # memory: in-order answers after any delay; word r of the program, END past it
        outstanding, r = Signal(6), Signal(6)
        acc, rsp = Signal(), Signal()
        m.d.comb += [dut.mem.cmd_ready.eq(i["cmd_ready"]),
                     acc.eq(dut.mem.cmd_valid & dut.mem.cmd_ready),
                     rsp.eq(i["rsp_valid"] & ((outstanding != 0) | acc)),
                     dut.mem.rsp_valid.eq(rsp)]
        m.d.sync += outstanding.eq(outstanding + acc - rsp)
        data = Const(encode(Insn(Opcode.END)), 128)
        for p in reversed(range(self.P)):
            data = Mux(r == p, i["prog"][p], data)
        m.d.comb += dut.mem.rsp_data.eq(data)
        with m.If(rsp):
            m.d.sync += r.eq(r + 1)
        # the DMA (finishes its operations in order) and the compute unit
        issued, done = Signal(4), Signal(4)
        m.d.comb += [dut.dma.insn.ready.eq(i["dma_ready"]), dut.dma.busy.eq(issued != done),
                     dut.cu.insn.ready.eq(i["cu_ready"]), dut.cu.busy.eq(i["cu_busy"])]
        with m.If(dut.dma.insn.valid & dut.dma.insn.ready):
            m.d.sync += issued.eq(issued + 1)
        with m.If(i["dma_finish"] & (issued != done)):
            m.d.sync += done.eq(done + 1)
        cu_n = Signal(4)
        with m.If(dut.cu.insn.valid & dut.cu.insn.ready):
            m.d.sync += cu_n.eq(cu_n + 1)
            for p in pos:
                with m.If(p.compute & (p.n_cu == cu_n) & p.guard):
                    m.d.comb += Assert(done >= p.guard_n)
        return m
