"""A stand-in for ``hw/core.py`` with the same flat ports (docs/isa.md "Core ports").

Job: read word 0 (``n`` in its low 16 bits); for i in 0..n-1 read word ``1 + i`` and write
``word + 1`` (mod 2**(8*bus_bytes)) to word ``1 + n + i``; report ``MARK 0x42``; stop with
``done``. ``n == 0xFFFF`` stops with ``error`` instead. Tests only.
"""

from __future__ import annotations

from amaranth.hdl import Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig

MARK_ID = 0x42


def standin_model(words: list[int], bus_bytes: int) -> dict[int, int]:
    """Word address -> value written by the stand-in's job on memory ``words``."""
    n = words[0] & 0xFFFF
    mask = (1 << (8 * bus_bytes)) - 1
    return {1 + n + i: (words[1 + i] + 1) & mask for i in range(n)}


class StandInCore(wiring.Component):
    def __init__(self, cfg: CoreConfig) -> None:
        self._cfg = cfg
        W = 8 * cfg.bus_bytes
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
            "cmd_valid": Out(1), "cmd_ready": In(1), "cmd_addr": Out(28), "cmd_we": Out(1),
            "cmd_wdata": Out(W), "rsp_valid": In(1), "rsp_data": In(W),
            "mark_valid": Out(1), "mark_id": Out(16), "cycles": Out(48),
        })

    def elaborate(self, platform) -> Module:
        m = Module()
        n = Signal(16)
        i = Signal(16)
        val = Signal(len(self.rsp_data))
        with m.If(self.busy):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.start):
                    m.d.sync += [self.busy.eq(1), self.done.eq(0), self.error.eq(0),
                                 self.cycles.eq(0), i.eq(0)]
                    m.next = "READ_N"
            with m.State("READ_N"):
                m.d.comb += [self.cmd_valid.eq(1), self.cmd_addr.eq(0)]
                with m.If(self.cmd_ready):
                    m.next = "WAIT_N"
            with m.State("WAIT_N"):
                with m.If(self.rsp_valid):
                    m.d.sync += n.eq(self.rsp_data[:16])
                    with m.If(self.rsp_data[:16] == 0xFFFF):
                        m.d.sync += [self.busy.eq(0), self.error.eq(1)]
                        m.next = "IDLE"
                    with m.Elif(self.rsp_data[:16] == 0):
                        m.next = "MARK"
                    with m.Else():
                        m.next = "READ"
            with m.State("READ"):
                m.d.comb += [self.cmd_valid.eq(1), self.cmd_addr.eq(1 + i)]
                with m.If(self.cmd_ready):
                    m.next = "WAIT"
            with m.State("WAIT"):
                with m.If(self.rsp_valid):
                    m.d.sync += val.eq(self.rsp_data + 1)
                    m.next = "WRITE"
            with m.State("WRITE"):
                m.d.comb += [self.cmd_valid.eq(1), self.cmd_we.eq(1),
                             self.cmd_addr.eq(1 + n + i), self.cmd_wdata.eq(val)]
                with m.If(self.cmd_ready):
                    m.d.sync += i.eq(i + 1)
                    with m.If(i == n - 1):
                        m.next = "MARK"
                    with m.Else():
                        m.next = "READ"
            with m.State("MARK"):
                m.d.comb += [self.mark_valid.eq(1), self.mark_id.eq(MARK_ID)]
                m.d.sync += [self.busy.eq(0), self.done.eq(1)]
                m.next = "IDLE"
        return m
