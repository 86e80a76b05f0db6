"""A small 8N1 UART: receiver and transmitter with byte streams.

PyPI's ``amaranth-stdio`` is only a name placeholder (version 0), so shiftbook carries its own
serial PHY. Both halves run from the ``sync`` domain with a fixed number of clock cycles per
bit (``divisor``); see :func:`uart_divisor` to pick one from a clock and a baud rate.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "uart_divisor", "MIN_DIVISOR"]

MIN_DIVISOR = 4


def uart_divisor(clk_hz: float, baud: int, *, tolerance: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``; ValueError if the rate error is over
    ``tolerance`` (2 % by default: 8N1 framing tolerates about 4 % end to end)."""
    if baud <= 0 or clk_hz <= 0:
        raise ValueError(f"baud rate {baud} and clock {clk_hz} Hz must be positive")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"baud rate {baud} is too fast for a {clk_hz / 1e6:g} MHz clock "
                         f"(needs at least {MIN_DIVISOR} clock cycles per bit)")
    error = abs(clk_hz / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"baud rate {baud} cannot be made from a {clk_hz / 1e6:g} MHz clock "
                         f"(nearest is {clk_hz / divisor:.0f}, {error:.1%} off)")
    return divisor


def _check_divisor(divisor: int) -> None:
    if not isinstance(divisor, int) or divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor must be an integer >= {MIN_DIVISOR}, not {divisor!r}")


class UARTRx(wiring.Component):
    """8N1 UART receiver.

    The line passes a two-flop synchroniser; a falling edge starts a frame, the start bit is
    checked at its middle and every data bit and the stop bit are sampled at theirs. A byte
    with a low stop bit is dropped and pulses ``frame_error``.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    rx : In(1)
        Serial line (idle high).
    bytes : Out(stream.Signature(8))
        Received bytes, LSB first on the line. ``valid`` stays high until ``ready``.
    overrun : Out(1)
        One-cycle pulse: a byte arrived while the previous one was still not taken (the new
        one is dropped).
    frame_error : Out(1)
        One-cycle pulse: a frame had a low stop bit (the byte is dropped).
    """

    def __init__(self, *, divisor: int) -> None:
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "rx": In(1, init=1),
            "bytes": Out(stream.Signature(8)),
            "overrun": Out(1),
            "frame_error": Out(1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform) -> Module:
        m = Module()
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1)

        timer = Signal(range(self._divisor * 3 // 2 + 1))
        bit = Signal(range(9))
        shreg = Signal(8)

        with m.If(self.bytes.ready):
            m.d.sync += self.bytes.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(self._divisor // 2 - 1)
                    m.next = "START"
            with m.State("START"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):       # a glitch, not a start bit
                        m.next = "IDLE"
                    with m.Else():
                        m.d.sync += [timer.eq(self._divisor - 1), bit.eq(0)]
                        m.next = "DATA"
            with m.State("DATA"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    m.d.sync += [timer.eq(self._divisor - 1), shreg.eq(Cat(shreg[1:], line)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                m.d.sync += timer.eq(timer - 1)
                with m.If(timer == 0):
                    with m.If(line):
                        with m.If(self.bytes.valid & ~self.bytes.ready):
                            m.d.comb += self.overrun.eq(1)
                        with m.Else():
                            m.d.sync += [self.bytes.valid.eq(1), self.bytes.payload.eq(shreg)]
                        m.next = "IDLE"
                    with m.Else():
                        m.d.comb += self.frame_error.eq(1)
                        m.next = "BREAK"
            with m.State("BREAK"):  # wait for the line to return high before the next frame
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(wiring.Component):
    """8N1 UART transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit (>= 4).

    Members
    -------
    bytes : In(stream.Signature(8))
        Bytes to send; one is taken (``ready``) whenever the transmitter is idle, and goes
        out as start bit, 8 data bits LSB first, stop bit (``10 * divisor`` cycles).
    tx : Out(1)
        Serial line (idle high).
    busy : Out(1)
        A frame is on the line.
    """

    def __init__(self, *, divisor: int) -> None:
        _check_divisor(divisor)
        self._divisor = divisor
        super().__init__({
            "bytes": In(stream.Signature(8)),
            "tx": Out(1, init=1),
            "busy": Out(1),
        })

    @property
    def divisor(self) -> int:
        return self._divisor

    def elaborate(self, platform) -> Module:
        m = Module()
        timer = Signal(range(self._divisor))
        bits = Signal(range(11))
        shreg = Signal(10, init=0x3FF)

        m.d.comb += [self.tx.eq(shreg[0]), self.busy.eq(bits != 0),
                     self.bytes.ready.eq(bits == 0)]
        with m.If(bits == 0):
            with m.If(self.bytes.valid):
                m.d.sync += [shreg.eq(Cat(Const(0, 1), self.bytes.payload, Const(1, 1))),
                             bits.eq(10), timer.eq(self._divisor - 1)]
        with m.Else():
            m.d.sync += timer.eq(timer - 1)
            with m.If(timer == 0):
                m.d.sync += [shreg.eq(Cat(shreg[1:], Const(1, 1))), bits.eq(bits - 1),
                             timer.eq(self._divisor - 1)]
        return m
