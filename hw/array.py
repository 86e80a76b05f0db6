"""The R x C output-stationary PE array with double accumulators."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .pe import make_pe

__all__ = ["PEArray"]


class PEArray(wiring.Component):
    """Rows are output pixels, columns output channels.

    Row ``r`` gets its own activation and in-bounds bit, column ``c`` its own weight byte; the
    control bits are common. All inputs go through one register stage (the broadcast stage)
    before reaching the PEs, named ``pe_{r}_{c}``.

    Parameters
    ----------
    rows, cols : int
        Array shape.
    acc_bits, exp_bits : int
        PE widths (see ``hw.pe``).
    kind : str
        ``"shift"`` or ``"mult"``.

    Members
    -------
    x : In(signed(8)).array(rows)
    valid : In(1).array(rows)
    code : In(8).array(cols)
    en, first, mode, load : In
        Step controls (see ``hw.pe``); ``load`` copies the updated accumulators into the drain
        registers.
    shift : In(1)
        Shift every column's drain chain one row towards row 0 (row ``rows-1`` takes 0).
    drain : Out(signed(acc_bits)).array(cols)
        Row 0's drain register of each column (the value the requantization lanes read).

    Latency: 2 (inputs at cycle t update the accumulators at the edge ending cycle t+1);
    ``shift`` acts at once (latency 1 on ``drain``).
    """

    latency = 2

    def __init__(self, *, rows: int, cols: int, acc_bits: int = 32, exp_bits: int = 4,
                 kind: str = "shift"):
        if not 1 <= rows <= 64 or not 1 <= cols <= 64:
            raise ValueError(f"array shape {rows}x{cols} must be within 64x64")
        self._rows, self._cols = rows, cols
        self._acc_bits, self._exp_bits, self._kind = acc_bits, exp_bits, kind
        super().__init__({
            "x": In(signed(8)).array(rows), "valid": In(1).array(rows),
            "code": In(8).array(cols),
            "en": In(1), "first": In(1), "mode": In(2), "load": In(1), "shift": In(1),
            "drain": Out(signed(acc_bits)).array(cols),
        })

    @property
    def rows(self) -> int:
        return self._rows

    @property
    def cols(self) -> int:
        return self._cols

    def elaborate(self, platform):
        m = Module()
        R, C = self._rows, self._cols
        # Broadcast stage.
        x = [Signal(signed(8), name=f"x_{r}") for r in range(R)]
        v = [Signal(name=f"valid_{r}") for r in range(R)]
        code = [Signal(8, name=f"code_{c}") for c in range(C)]
        en, first, mode, load = Signal(), Signal(), Signal(2), Signal()
        m.d.sync += [en.eq(self.en), first.eq(self.first), mode.eq(self.mode),
                     load.eq(self.load)]
        for r in range(R):
            m.d.sync += [x[r].eq(self.x[r]), v[r].eq(self.valid[r])]
        for c in range(C):
            m.d.sync += code[c].eq(self.code[c])
        pes = [[None] * C for _ in range(R)]
        for r in range(R):
            for c in range(C):
                pe = make_pe(self._kind, acc_bits=self._acc_bits, exp_bits=self._exp_bits)
                m.submodules[f"pe_{r}_{c}"] = pe
                pes[r][c] = pe
                m.d.comb += [pe.en.eq(en), pe.first.eq(first), pe.mode.eq(mode),
                             pe.load.eq(load), pe.shift.eq(self.shift),
                             pe.valid.eq(v[r]), pe.x.eq(x[r]), pe.code.eq(code[c])]
        for r in range(R):
            for c in range(C):
                if r + 1 < R:
                    m.d.comb += pes[r][c].drain_in.eq(pes[r + 1][c].drain)
                else:
                    m.d.comb += pes[r][c].drain_in.eq(0)
        for c in range(C):
            m.d.comb += self.drain[c].eq(pes[0][c].drain)
        return m
