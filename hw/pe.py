"""Processing elements: the shift PE (the product) and a multiplier PE (a baseline only).

Both keep one working accumulator and one drain register (the second half of the array's
double accumulators): the last reduction step of a tile copies the updated accumulator into the
drain register, and the drain registers of a column form a shift chain towards the
requantization lane, so the drain of tile t overlaps the reduction of tile t+1.
"""

from __future__ import annotations

from amaranth.hdl import Const, Module, Mux, Signal, Value, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftbook import numerics
from shiftbook.isa import Mode

__all__ = ["ShiftPE", "MultPE", "TwoTermShiftPE", "make_pe", "pe_model"]


def pe_model(acc: int, x: int, code: int, *, valid: bool, mode: int, first: bool,
             acc_bits: int, exp_bits: int, kind: str = "shift") -> int:
    """One enabled accumulator update, bit-exact with the gateware.

    ``first`` starts from 0 (MAC, SUM) or the most negative accumulator value (MAX); invalid
    (padding) positions change nothing else; the sum wraps at ``acc_bits`` (the compiler
    proves real layers never overflow). The MAC addend is ``numerics.shift_product`` (shift
    PE), ``x * int8(code)`` (multiplier PE), or for the two-term PE the sum of the shift
    products of the code's low byte and high byte.
    """
    lo = -(1 << (acc_bits - 1))
    if first:
        acc = lo if mode == Mode.MAX else 0
    if valid:
        if mode == Mode.MAC:
            mask = (1 << (exp_bits + 2)) - 1
            if kind == "shift":
                acc += int(numerics.shift_product(x, code & mask, exp_bits))
            elif kind == "two-term":
                acc += int(numerics.shift_product(x, code & mask, exp_bits)) \
                    + int(numerics.shift_product(x, (code >> 8) & mask, exp_bits))
            else:
                w = code - 256 if code & 0x80 else code
                acc += x * w
        elif mode == Mode.MAX:
            acc = max(acc, x)
        elif mode == Mode.SUM:
            acc += x
    acc &= (1 << acc_bits) - 1
    return acc - (1 << acc_bits) if acc >> (acc_bits - 1) else acc


def _int8_greater(m: Module, x: Value, acc: Value) -> Value:
    """``x > acc`` for an int8 ``x``: when ``acc`` is outside the int8 range its sign decides;
    otherwise an 8-bit comparison (cheaper than a full-width comparator)."""
    hi = acc[7:]
    in_range = Signal()
    m.d.comb += in_range.eq((hi == 0) | (hi == (1 << len(hi)) - 1))
    low_greater = Signal()
    m.d.comb += low_greater.eq(x > acc[:8].as_signed())
    return Mux(in_range, low_greater, acc[-1])


class _PE(wiring.Component):
    """Common PE shell: one adder for every mode (docs/hw.md, "PE datapath"); subclasses
    provide its MAC operand.

    Parameters
    ----------
    acc_bits : int
        Accumulator width (signed).
    exp_bits : int
        Shift-code exponent width (the code's layout is in ``shiftbook/numerics.py``).

    Members
    -------
    en : In(1)
        A reduction step reaches this PE this cycle (nothing changes without it).
    first : In(1)
        The step starts from the cleared accumulator (0, or the most negative value in MAX).
    valid : In(1)
        The step's window position is in bounds; otherwise the accumulator only clears
        (if ``first``) and keeps its value.
    mode : In(2)
        ``shiftbook.isa.Mode``: MAC, MAX, SUM.
    x : In(signed(8))
        Activation.
    code : In(8)
        Weight byte: a shift code in the low ``exp_bits + 2`` bits (shift PE) or an int8
        (multiplier PE).
    load : In(1)
        With ``en``: also copy the updated accumulator into the drain register (same edge).
    shift : In(1)
        The drain register takes ``drain_in`` (the next row's drain register); ``en & load``
        wins.
    drain_in : In(signed(acc_bits))
    drain : Out(signed(acc_bits))
        The drain register.
    acc : Out(signed(acc_bits))
        The working accumulator.

    Latency: 1 cycle (``acc`` shows a step's update the cycle after ``en``).
    """

    kind = "shift"
    latency = 1
    code_width = 8

    def __init__(self, *, acc_bits: int = 32, exp_bits: int = 4):
        if not 1 <= exp_bits <= 5:
            self._MustUse__silence = True   # no "created but never used" warning
            raise ValueError(f"exp_bits={exp_bits} must be in [1, 5]")
        if not 16 <= acc_bits <= 64 or 8 + (1 << exp_bits) > acc_bits:
            self._MustUse__silence = True
            raise ValueError(f"acc_bits={acc_bits} must be in [16, 64] and hold the "
                             f"{8 + (1 << exp_bits) - 1}-bit products of exp_bits={exp_bits}")
        self._acc_bits = acc_bits
        self._exp_bits = exp_bits
        super().__init__({
            "en": In(1), "first": In(1), "valid": In(1), "mode": In(2),
            "x": In(signed(8)), "code": In(self.code_width),
            "load": In(1), "shift": In(1),
            "drain_in": In(signed(acc_bits)), "drain": Out(signed(acc_bits)),
            "acc": Out(signed(acc_bits)),
        })

    @property
    def acc_bits(self) -> int:
        return self._acc_bits

    @property
    def exp_bits(self) -> int:
        return self._exp_bits

    def model(self, acc: int, x: int, code: int, *, valid: bool, mode: int,
              first: bool) -> int:
        """The accumulator after one enabled step (see :func:`pe_model`)."""
        return pe_model(acc, x, code, valid=valid, mode=mode, first=first,
                        acc_bits=self._acc_bits, exp_bits=self._exp_bits, kind=self.kind)

    def _operand(self, m: Module, mac: Value, pass_x: Value) -> tuple[Value, Value]:
        """The adder's second operand and carry-in: the MAC addend when ``mac`` (a valid MAC
        step), ``x`` when ``pass_x``, otherwise 0."""
        raise NotImplementedError

    def elaborate(self, platform):
        m = Module()
        ab = self._acc_bits
        is_mac = Signal()
        is_max = Signal()
        is_sum = Signal()
        m.d.comb += [is_mac.eq(self.mode == Mode.MAC), is_max.eq(self.mode == Mode.MAX),
                     is_sum.eq(self.mode == Mode.SUM)]
        # One adder serves every mode: nxt = a + b (+ cin).
        #   MAC/SUM: a = first ? 0 : acc, b = addend (0 when not valid).
        #   MAX: x wins when first or x > acc; then a = 0, b = x; else a = acc (or the most
        #   negative value when first and not valid), b = 0. The comparison only needs the
        #   old accumulator, never the adder's result.
        x_wins = Signal()
        m.d.comb += x_wins.eq(self.first | _int8_greater(m, self.x, self.acc))
        clear = Signal()
        m.d.comb += clear.eq(self.first | (is_max & self.valid & x_wins))
        a = Signal(signed(ab))
        m.d.comb += [
            a[:ab - 1].eq(Mux(clear, 0, self.acc[:ab - 1])),
            a[ab - 1].eq(Mux(clear, self.first & is_max & ~self.valid, self.acc[ab - 1])),
        ]
        pass_x = Signal()
        m.d.comb += pass_x.eq(self.valid & (is_sum | (is_max & x_wins)))
        mac = Signal()
        m.d.comb += mac.eq(self.valid & is_mac)
        b, cin = self._operand(m, mac, pass_x)
        nxt = Signal(signed(ab))
        m.d.comb += nxt.eq(a + b + cin)
        with m.If(self.en):
            m.d.sync += self.acc.eq(nxt)
        with m.If(self.en & self.load):
            m.d.sync += self.drain.eq(nxt)
        with m.Elif(self.shift):
            m.d.sync += self.drain.eq(self.drain_in)
        return m


class ShiftPE(_PE):
    """Shift PE: MAC adds ``±(x << e)``, or nothing for the zero code. No multiplier.

    Parameters and members: see ``_PE``.
    """

    kind = "shift"

    def _operand(self, m: Module, mac: Value, pass_x: Value) -> tuple[Value, Value]:
        eb = self._exp_bits
        e, sign, zero = self.code[:eb], self.code[eb], self.code[eb + 1]
        # SUM and MAX reuse the shifter with a zero shift; a negative product is added as
        # ~p + 1 (the +1 is the adder's carry-in), so there is no separate negation adder.
        xg = Signal(signed(8))
        m.d.comb += xg.eq(Mux(pass_x | (mac & ~zero), self.x, 0))
        neg = Signal()
        m.d.comb += neg.eq(mac & sign)
        p = Signal(signed(8 + (1 << eb) - 1))
        m.d.comb += p.eq(xg << Mux(mac, e, 0))
        b = Signal(signed(len(p)))
        m.d.comb += b.eq(p ^ neg.replicate(len(p)))
        return b, neg


class MultPE(_PE):
    """Multiplier PE (``pe="mult"``): the weight byte is an int8, MAC adds ``x * w``.

    A baseline for resource comparisons only; the shift core never instantiates it.
    Parameters and members: see ``_PE``.
    """

    kind = "mult"

    def _operand(self, m: Module, mac: Value, pass_x: Value) -> tuple[Value, Value]:
        prod = Signal(signed(16))
        m.d.comb += prod.eq(self.x * self.code.as_signed())
        b = Signal(signed(16))
        m.d.comb += b.eq(Mux(mac, prod, Mux(pass_x, self.x, 0)))
        return b, Const(0, 1)


class TwoTermShiftPE(_PE):
    """A two-term shift PE (issue 16's first candidate): two shifters and an adder, MAC adds
    ``±(x << a) ±(x << b)`` in one step; ``code`` holds the first term's code in its low byte
    and the second's in its high byte.

    Built for comparison only (``bench/bench_pe_resources.py`` prints its LUT4s beside the
    shift PE): the core runs two-term layers on the one-term PE, one reduction per term
    (docs/numerics.md), so no PE pays for the second shifter on one-term layers.
    """

    kind = "two-term"
    code_width = 16

    def __init__(self, *, acc_bits: int = 32, exp_bits: int = 4):
        if 9 + (1 << exp_bits) > acc_bits:
            self._MustUse__silence = True
            raise ValueError(f"acc_bits={acc_bits} must hold the sum of two products of "
                             f"exp_bits={exp_bits}")
        super().__init__(acc_bits=acc_bits, exp_bits=exp_bits)

    def _operand(self, m: Module, mac: Value, pass_x: Value) -> tuple[Value, Value]:
        eb = self._exp_bits
        width = 8 + (1 << eb)

        def term(code: Value, keep: Value) -> tuple[Value, Value]:
            e, sign, zero = code[:eb], code[eb], code[eb + 1]
            xg = Signal(signed(8))
            m.d.comb += xg.eq(Mux(keep | (mac & ~zero), self.x, 0))
            neg = Signal()
            m.d.comb += neg.eq(mac & sign & ~zero)
            p = Signal(signed(width - 1))
            m.d.comb += p.eq(xg << Mux(mac, e, 0))
            return Mux(neg, ~p, p), neg

        # MAX and SUM pass x through the first term; the second adds nothing then. Each
        # negative term is ~p + 1: one +1 is the accumulator adder's carry-in, the other the
        # term adder's.
        t1, n1 = term(self.code[:8], pass_x)
        t2, n2 = term(self.code[8:], Const(0, 1))
        b = Signal(signed(width))
        m.d.comb += b.eq(t1 + t2 + n2)
        return b, n1


def make_pe(kind: str, *, acc_bits: int, exp_bits: int) -> _PE:
    """The PE of a CoreConfig's ``pe`` kind."""
    if kind == "shift":
        return ShiftPE(acc_bits=acc_bits, exp_bits=exp_bits)
    if kind == "mult":
        return MultPE(acc_bits=acc_bits, exp_bits=exp_bits)
    raise ValueError(f"unknown PE kind {kind!r} (shift or mult)")
