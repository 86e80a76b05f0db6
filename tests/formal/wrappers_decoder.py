"""Test-only wrapper: one codebook decoder lane against a scoreboard, under any stall pattern.

The environment is free: ``i.valid``/``i.payload`` and ``o.ready`` change arbitrarily every
cycle (any stall and back-pressure pattern), the codebook is written with arbitrary rows
before the first index, ``k`` and ``d`` are arbitrary but fixed. A symbolic probe (block
number ``sel_n``, position ``sel_j``, index value ``sel_i``, all arbitrary constants) follows one
code: the assertions say that the ``sel_j``-th code of the ``sel_n``-th block on ``o`` is
codeword ``sel_i``'s code ``sel_j`` (so no code is out of order, dropped or duplicated), that
no code comes out for a block never accepted, that every accepted code is out within a bound
once the input stops and ``o`` is ready, and that ``oob`` is raised exactly for an accepted
index past ``k`` (the lane never serves a row past its codebook unflagged).
"""

from __future__ import annotations

from amaranth.hdl import (
    Assert,
    Assume,
    Const,
    Elaboratable,
    Module,
    Mux,
    ResetSignal,
    Signal,
    Value,
    unsigned,
)
from amaranth.lib import data

from shiftbook.hw.decoder import DecoderLane

__all__ = ["DecoderSpec", "BrokenDecoderLane"]


class BrokenDecoderLane(DecoderLane):
    """A deliberately broken lane (test-only mutation): it ignores back-pressure on ``o``,
    so a stalled code is overwritten by the next one."""

    def _control(self, m, in_valid, out_ready):
        return super()._control(m, in_valid, Const(1))


class DecoderSpec(Elaboratable):
    """A decoder lane and its scoreboard assertions (see the module docstring)."""

    def __init__(self, *, max_k: int = 4, max_d: int = 4, code_bits: int = 6,
                 broken: bool = False, blocks: int = 8) -> None:
        cls = BrokenDecoderLane if broken else DecoderLane
        self.dut = cls(max_k=max_k, max_d=max_d, code_bits=code_bits)
        self.max_k, self.max_d, self.code_bits = max_k, max_d, code_bits
        ib = self.dut.idx_bits
        row = data.ArrayLayout(unsigned(code_bits), max_d)
        self.inputs = dict(i_valid=Signal(), i_payload=Signal(ib), o_ready=Signal(),
                           k=Signal(range(max_k + 1)), d=Signal(range(max_d + 1)),
                           cb_addr=Signal(ib), cb_data=Signal(row), cb_en=Signal(max_d),
                           sel_n=Signal(range(blocks)), sel_j=Signal(range(max_d)),
                           sel_i=Signal(ib))

    @property
    def ports(self) -> list:
        return [Value.cast(v) for v in self.inputs.values()]

    def _environment(self, m: Module) -> None:
        """The DUT's inputs, and the assumptions that keep ``k``, ``d`` and the probe fixed."""
        i, dut = self.inputs, self.dut
        m.d.comb += [dut.i.valid.eq(i["i_valid"]), dut.i.payload.eq(i["i_payload"]),
                     dut.o.ready.eq(i["o_ready"]), dut.k.eq(i["k"]), dut.d.eq(i["d"]),
                     dut.cb_addr.eq(i["cb_addr"]), dut.cb_data.eq(i["cb_data"]),
                     dut.cb_en.eq(i["cb_en"]), dut.flush.eq(0)]
        m.d.comb += [Assume(~ResetSignal()), Assume((i["k"] >= 1) & (i["k"] <= self.max_k)),
                     Assume((i["d"] >= 1) & (i["d"] <= self.max_d)), Assume(i["sel_j"] < i["d"])]
        armed = Signal()
        held = {n: Signal.like(i[n], name=f"held_{n}") for n in ("k", "d", "sel_n", "sel_j",
                                                                 "sel_i")}
        m.d.sync += armed.eq(1)
        m.d.sync += [held[n].eq(i[n]) for n in held]
        with m.If(armed):
            m.d.comb += [Assume(i[n] == held[n]) for n in held]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        self._environment(m)
        i = self.inputs
        acc_in = Signal()
        out = Signal()
        m.d.comb += [acc_in.eq(dut.i.valid & dut.i.ready), out.eq(dut.o.valid & dut.o.ready)]
        n_in = Signal(4)     # blocks accepted
        ob = Signal(4)       # block of the next output code
        op = Signal(range(self.max_d))   # its position in the block
        with m.If(acc_in):
            m.d.sync += n_in.eq(n_in + 1)
        # the codebook only changes before the first index; block sel_n carries index sel_i
        m.d.comb += Assume(~((acc_in | (n_in != 0)) & (i["cb_en"] != 0)))
        with m.If(acc_in & (n_in == i["sel_n"])):
            m.d.comb += Assume(i["i_payload"] == i["sel_i"])
        shadow = Signal(self.code_bits)   # codebook[sel_i][sel_j]
        with m.If((i["cb_addr"] == i["sel_i"]) & i["cb_en"].bit_select(i["sel_j"], 1)):
            m.d.sync += shadow.eq(i["cb_data"].as_value().word_select(i["sel_j"],
                                                                       self.code_bits))
        with m.If(out):
            m.d.comb += Assert(ob < n_in)   # no code of a block never accepted
            with m.If((ob == i["sel_n"]) & (op == i["sel_j"])):
                m.d.comb += Assert(dut.o.payload == shadow)
            with m.If(op == i["d"] - 1):
                m.d.sync += [op.eq(0), ob.eq(ob + 1)]
            with m.Else():
                m.d.sync += op.eq(op + 1)
        self._drained(m, ob, op, n_in)
        self._oob(m, acc_in)
        return m

    def _drained(self, m: Module, ob, op, n_in) -> None:
        """Once no index is offered and ``o`` is ready for ``max_d + 3`` cycles, every
        accepted code has come out (none dropped at the end, none stuck)."""
        i = self.inputs
        quiet = Signal(range(self.max_d + 4))
        with m.If(~i["i_valid"] & i["o_ready"]):
            m.d.sync += quiet.eq(Mux(quiet == self.max_d + 3, quiet, quiet + 1))
        with m.Else():
            m.d.sync += quiet.eq(0)
        with m.If(quiet == self.max_d + 3):
            m.d.comb += Assert((ob == n_in) & (op == 0))

    def _oob(self, m: Module, acc_in) -> None:
        """``oob`` is set the cycle after an index ``>= k`` is accepted, and only then."""
        dut, i = self.dut, self.inputs
        seen = Signal()
        with m.If(acc_in & (i["i_payload"] >= i["k"])):
            m.d.sync += seen.eq(1)
        m.d.comb += Assert(dut.oob == seen)
