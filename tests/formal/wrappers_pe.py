"""Test-only wrapper: the shift PE against its specification, for every input and state.

The specification is written here in Amaranth, independently of ``hw/pe.py``'s one-adder
datapath: ``pe_model``'s case analysis (clear on ``first``, MAC adds ``±(x << e)`` or nothing,
MAX keeps the larger, SUM adds ``x``, an invalid position changes nothing, the sum wraps at
``acc_bits``) and the drain register's load/shift/hold rule. A register holds what the spec
says the PE's registers must be after each edge; the proof is 1-inductive, so it covers every
accumulator value, not only those reachable in a few steps.
"""

from __future__ import annotations

from amaranth.hdl import Assert, Assume, Elaboratable, Module, Mux, ResetSignal, Signal, signed

from shiftbook.hw.pe import ShiftPE
from shiftbook.isa import Mode

__all__ = ["PESpec", "BrokenShiftPE"]


class BrokenShiftPE(ShiftPE):
    """A deliberately broken PE (test-only mutation): a negative product loses its +1 carry,
    so ``-(x << e)`` comes out one too small."""

    def _operand(self, m, mac, pass_x):
        b, _cin = super()._operand(m, mac, pass_x)
        return b, 0


class PESpec(Elaboratable):
    """A PE under test plus the assertions that its ``acc`` and ``drain`` equal the spec."""

    def __init__(self, *, acc_bits: int, exp_bits: int, broken: bool = False) -> None:
        cls = BrokenShiftPE if broken else ShiftPE
        self.pe = cls(acc_bits=acc_bits, exp_bits=exp_bits)
        self.ab, self.eb = acc_bits, exp_bits
        self.inputs = dict(en=Signal(), first=Signal(), valid=Signal(), mode=Signal(2),
                           x=Signal(signed(8)), code=Signal(8), load=Signal(), shift=Signal(),
                           drain_in=Signal(signed(acc_bits)))

    @property
    def ports(self) -> list[Signal]:
        return list(self.inputs.values())

    def _spec_acc(self, m: Module) -> Signal:
        """The accumulator after one enabled step, by ``pe_model``'s case analysis."""
        i, ab, eb = self.inputs, self.ab, self.eb
        start = Signal(signed(ab))
        m.d.comb += start.eq(Mux(i["first"], Mux(i["mode"] == Mode.MAX, -(1 << (ab - 1)), 0),
                                 self.pe.acc))
        e, sign, zero = i["code"][:eb], i["code"][eb], i["code"][eb + 1]
        mag = Signal(signed(8 + (1 << eb)))
        m.d.comb += mag.eq(i["x"] << e)
        nxt = Signal(signed(ab))
        m.d.comb += nxt.eq(start)
        with m.If(i["valid"]):
            with m.Switch(i["mode"]):
                with m.Case(Mode.MAC):
                    with m.If(~zero):
                        m.d.comb += nxt.eq(Mux(sign, start - mag, start + mag))
                with m.Case(Mode.MAX):
                    m.d.comb += nxt.eq(Mux(i["x"] > start, i["x"], start))
                with m.Case(Mode.SUM):
                    m.d.comb += nxt.eq(start + i["x"])
        return nxt

    def elaborate(self, platform):
        m = Module()
        m.submodules.pe = pe = self.pe
        for name, sig in self.inputs.items():
            m.d.comb += getattr(pe, name).eq(sig)
        m.d.comb += Assume(~ResetSignal())
        nxt = self._spec_acc(m)
        i = self.inputs
        exp_acc = Signal(signed(self.ab))
        exp_drain = Signal(signed(self.ab))
        armed = Signal()
        m.d.sync += [armed.eq(1), exp_acc.eq(Mux(i["en"], nxt, pe.acc)),
                     exp_drain.eq(Mux(i["en"] & i["load"], nxt,
                                      Mux(i["shift"], i["drain_in"], pe.drain)))]
        with m.If(armed):
            m.d.comb += [Assert(pe.acc == exp_acc), Assert(pe.drain == exp_drain)]
        return m
