"""Requantization lane: accumulator -> int8, shift-only (``sw/numerics.requantize``)."""

from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftbook import numerics

__all__ = ["RequantLane"]


class RequantLane(wiring.Component):
    """One column's requantization: bias add, optional aligned residual, round-half-up
    arithmetic right shift, optional ReLU, int8 saturation. No multipliers.

    ``out = sat8(relu(round_shift(acc + bias + align(res, res_shift), shift)))`` exactly as
    ``sw/numerics.requantize``, for ``shift`` in ``[0, acc_bits]`` (docs/isa.md) and
    ``res_shift`` in ``[-128, acc_bits - 8]`` (left shifts beyond that would not fit the
    accumulator; the compiler never emits them) and ``bias`` in ``bias_bits`` signed bits. The
    sum is carried in ``max(acc_bits, bias_bits) + 2`` bits, and only the low
    ``acc_bits.bit_length()`` bits of ``shift`` are read (both are all that the three terms
    and the shift range need: no 64-bit or 34-bit datapath when the accumulator is narrow).

    Parameters
    ----------
    acc_bits : int
        Accumulator width.
    bias_bits : int
        Bias width (default 32, the BIAS row's field). The core passes ``acc_bits``: the
        compiler refuses a layer whose bias does not fit the accumulator
        (``sw/numerics.check_acc_fits`` counts the bias in the worst case).

    Members
    -------
    i_valid : In(1)
        The inputs below hold a value to requantize this cycle.
    acc : In(signed(acc_bits))
    bias : In(signed(bias_bits))
    shift : In(8)
    res : In(signed(8))
        Residual operand (ignored unless ``residual``).
    res_shift : In(signed(8))
    relu, residual : In(1)
    o_valid : Out(1)
    out : Out(signed(8))

    Latency: 3 (``out``/``o_valid`` follow ``i_valid`` by 3 cycles); one value per cycle.
    """

    latency = 3

    def __init__(self, *, acc_bits: int = 32, bias_bits: int = 32):
        if not 16 <= acc_bits <= 64:
            raise ValueError(f"acc_bits={acc_bits} must be in [16, 64]")
        if not 8 <= bias_bits <= 32:
            raise ValueError(f"bias_bits={bias_bits} must be in [8, 32]")
        self._acc_bits = acc_bits
        self._bias_bits = bias_bits
        super().__init__({
            "i_valid": In(1), "acc": In(signed(acc_bits)), "bias": In(signed(bias_bits)),
            "shift": In(8), "res": In(signed(8)), "res_shift": In(signed(8)),
            "relu": In(1), "residual": In(1),
            "o_valid": Out(1), "out": Out(signed(8)),
        })

    @property
    def acc_bits(self) -> int:
        return self._acc_bits

    @property
    def sum_bits(self) -> int:
        return max(self._acc_bits, self._bias_bits) + 2

    @property
    def shift_bits(self) -> int:
        """Bits of ``shift`` the lane reads (shifts are in ``[0, acc_bits]``)."""
        return self._acc_bits.bit_length()

    def model(self, acc: int, bias: int, shift: int, *, relu: bool = False,
              residual: int | None = None, res_shift: int = 0) -> int:
        return int(numerics.requantize(acc, bias, shift, relu=relu, residual=residual,
                                       res_shift=res_shift))

    def elaborate(self, platform):
        m = Module()
        W = self.sum_bits
        # Stage 1: aligned residual and the sum.
        s = self.res_shift
        lbits = max(1, (self._acc_bits - 8).bit_length())
        left = Signal(signed(W))
        m.d.comb += left.eq(self.res << s.as_unsigned()[:lbits])
        t = Signal(8)  # right shift amount -s, 1..128
        m.d.comb += t.eq(-s)
        right = Signal(signed(9))
        m.d.comb += right.eq(Mux(t >= 8, 0, ((self.res >> (t[:3] - 1)[:3]) + 1) >> 1))
        aligned = Signal(signed(W))
        m.d.comb += aligned.eq(Mux(~self.residual, 0, Mux(s >= 0, left, right)))
        v1 = Signal(signed(W), name="v1")
        SB = self.shift_bits
        sh1, relu1, ok1 = Signal(SB), Signal(), Signal()
        m.d.sync += [v1.eq(self.acc + self.bias + aligned), sh1.eq(self.shift[:SB]),
                     relu1.eq(self.relu), ok1.eq(self.i_valid)]
        # Stage 2: round-half-up right shift: ((v >> (s-1)) + 1) >> 1 for s >= 1.
        v2 = Signal(signed(W), name="v2")
        relu2, ok2 = Signal(), Signal()
        rounded = ((v1 >> (sh1 - 1)[:SB]) + 1) >> 1
        m.d.sync += [v2.eq(Mux(sh1 == 0, v1, rounded)), relu2.eq(relu1), ok2.eq(ok1)]
        # Stage 3: ReLU and saturation.
        with m.If(v2 > 127):
            m.d.sync += self.out.eq(127)
        with m.Elif(relu2 & (v2 < 0)):
            m.d.sync += self.out.eq(0)
        with m.Elif(v2 < -128):
            m.d.sync += self.out.eq(-128)
        with m.Else():
            m.d.sync += self.out.eq(v2)
        m.d.sync += self.o_valid.eq(ok2)
        return m
