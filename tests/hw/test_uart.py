# amaranth: UnusedElaboratable=no
"""UART PHY: transmitter into receiver, line-level framing checks, divisor choice."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Module
from amaranth.sim import Simulator

from shiftbook.hw.uart import UARTRx, UARTTx, uart_divisor


def _line_bits(byte: int, stop: int = 1) -> list[int]:
    return [0, *((byte >> i) & 1 for i in range(8)), stop]


@pytest.mark.parametrize("divisor", [4, 5, 7])
def test_tx_into_rx_loopback(divisor: int) -> None:
    rng = random.Random(divisor)
    data = [0x00, 0xFF, 0x55, 0xAA] + [rng.randrange(256) for _ in range(12)]
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=divisor)
    m.submodules.rx = rx = UARTRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got: list[int] = []
    errors: list[str] = []

    async def send(ctx) -> None:
        for b in data:
            ctx.set(tx.bytes.valid, 1)
            ctx.set(tx.bytes.payload, b)
            await ctx.tick().until(tx.bytes.ready)
            # random idle time between bytes
            ctx.set(tx.bytes.valid, 0)
            await ctx.tick().repeat(rng.randrange(1, 3 * divisor))

    async def receive(ctx) -> None:
        ctx.set(rx.bytes.ready, 1)
        async for _, _, valid, payload, ovr, ferr in ctx.tick().sample(
                rx.bytes.valid, rx.bytes.payload, rx.overrun, rx.frame_error):
            if valid:
                got.append(payload)
            if ovr or ferr:
                errors.append("overrun" if ovr else "frame")

    sim = Simulator(m)
    sim.add_clock(1e-6)
    sim.add_testbench(send)
    sim.add_testbench(receive, background=True)
    sim.run_until(1e-6 * (len(data) * 14 * divisor + 50))
    assert got == data
    assert errors == []


def test_tx_line_waveform() -> None:
    """The transmitter's line, sampled every cycle, is exactly start, data LSB first, stop."""
    d = 4
    dut = UARTTx(divisor=d)
    line: list[int] = []

    async def bench(ctx) -> None:
        ctx.set(dut.bytes.valid, 1)
        ctx.set(dut.bytes.payload, 0xA6)
        await ctx.tick()
        ctx.set(dut.bytes.valid, 0)
        for _ in range(12 * d):
            _, _, v = await ctx.tick().sample(dut.tx)
            line.append(v)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    expect = [b for bit in _line_bits(0xA6) for b in [bit] * d] + [1] * (2 * d)
    assert line == expect


def _drive_rx(divisor: int, frames: list[list[int]], ready: bool = True,
              raw: tuple[int, ...] = ()):
    dut = UARTRx(divisor=divisor)
    got: list[int] = []
    events: list[str] = []

    async def drive(ctx) -> None:
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(3)
        for v in raw:  # per-cycle line values
            ctx.set(dut.rx, v)
            await ctx.tick()
        ctx.set(dut.rx, 1)
        await ctx.tick().repeat(2 * divisor)
        for bits in frames:
            for bit in bits:
                ctx.set(dut.rx, bit)
                await ctx.tick().repeat(divisor)
            ctx.set(dut.rx, 1)
            await ctx.tick().repeat(divisor)
        await ctx.tick().repeat(4 * divisor)

    async def watch(ctx) -> None:
        ctx.set(dut.bytes.ready, int(ready))
        async for _, _, valid, payload, ovr, ferr in ctx.tick().sample(
                dut.bytes.valid, dut.bytes.payload, dut.overrun, dut.frame_error):
            if valid and ready:
                got.append(payload)
            if ovr:
                events.append("overrun")
            if ferr:
                events.append("frame")

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(drive)
    sim.add_testbench(watch, background=True)
    sim.run()
    return got, events


def test_rx_frame_error_drops_byte() -> None:
    got, events = _drive_rx(6, [_line_bits(0x3C), _line_bits(0x81, stop=0), _line_bits(0x7E)])
    assert got == [0x3C, 0x7E]
    assert events == ["frame"]


def test_rx_overrun_when_not_taken() -> None:
    got, events = _drive_rx(4, [_line_bits(1), _line_bits(2), _line_bits(3)], ready=False)
    assert got == []
    assert events == ["overrun", "overrun"]


def test_rx_ignores_glitch() -> None:
    # A low pulse shorter than half a bit is not a start bit.
    got, events = _drive_rx(8, [_line_bits(0x5A)], raw=(0, 0, 1))
    assert got == [0x5A] and events == []


def test_uart_divisor() -> None:
    assert uart_divisor(25e6, 1_000_000) == 25
    assert uart_divisor(12e6, 115200) == 104
    assert uart_divisor(100e6, 1_000_000) == 100
    with pytest.raises(ValueError, match="too fast"):
        uart_divisor(12e6, 4_000_000)
    with pytest.raises(ValueError, match="off"):
        uart_divisor(12e6, 2_500_000)
    with pytest.raises(ValueError, match="divisor"):
        UARTRx(divisor=3)
