"""A simulated board behind a serial-port-like transport (amaranth.sim).

``SimBoard`` runs a ``BoardSystem`` in Amaranth's simulator and offers the three methods the
host side (``sw/host.py``) needs: ``write(bytes)``, ``read(n)`` and ``idle(seconds)``. Bytes
written are fed to the board; ``read`` advances simulated time until ``n`` reply bytes came
back or ``timeout_cycles`` passed. With a UART PHY in the system the bytes travel as real 8N1
frames on the ``rx``/``tx`` lines (``divisor`` clocks per bit); without one they go straight
into the link engine's byte streams, one per clock (much faster).
"""

from __future__ import annotations

from collections import deque

from amaranth.sim import Simulator

from shiftbook.hw.board_top import BoardSystem

__all__ = ["SimBoard"]


class SimBoard:
    """Serial transport to a simulated ``BoardSystem``.

    Parameters
    ----------
    system:
        The board (with or without its UART PHY).
    clk_hz:
        Simulated clock frequency (converts ``idle`` seconds to cycles).
    timeout_cycles:
        How long ``read`` waits for missing bytes, in clock cycles.
    vcd:
        Optional path: write a waveform of the whole session there (slow).
    """

    def __init__(self, system: BoardSystem, *, clk_hz: float = 1e6,
                 timeout_cycles: int = 200_000, vcd: str | None = None) -> None:
        self.system = system
        self.clk_hz = clk_hz
        self.timeout_cycles = timeout_cycles
        self._period = 1 / clk_hz
        self._inq: deque[int] = deque()
        self._out = bytearray()
        self._time_cycles = 0
        sim = Simulator(system)
        sim.add_clock(self._period)
        divisor = getattr(system, "_divisor", None)
        if divisor is None:
            sim.add_testbench(self._stream_driver, background=True)
            sim.add_testbench(self._stream_monitor, background=True)
        else:
            self._divisor = divisor
            sim.add_testbench(self._line_driver, background=True)
            sim.add_testbench(self._line_monitor, background=True)
        self._sim = sim
        self._vcd_ctx = None
        if vcd:
            self._vcd_ctx = sim.write_vcd(vcd)
            self._vcd_ctx.__enter__()

    # ---- testbenches
    async def _stream_driver(self, ctx) -> None:
        rx = self.system.rx
        while True:
            if self._inq:
                ctx.set(rx.valid, 1)
                ctx.set(rx.payload, self._inq[0])
                _, _, ready = await ctx.tick().sample(rx.ready)
                if ready:
                    self._inq.popleft()
            else:
                ctx.set(rx.valid, 0)
                await ctx.tick()

    async def _stream_monitor(self, ctx) -> None:
        tx = self.system.tx
        ctx.set(tx.ready, 1)
        async for _, _, valid, payload in ctx.tick().sample(tx.valid, tx.payload):
            if valid:
                self._out.append(payload)

    async def _line_driver(self, ctx) -> None:
        rx = self.system.rx
        ctx.set(rx, 1)
        while True:
            if not self._inq:
                await ctx.tick()
                continue
            byte = self._inq.popleft()
            for bit in [0, *((byte >> i) & 1 for i in range(8)), 1]:
                ctx.set(rx, bit)
                await ctx.tick().repeat(self._divisor)

    async def _line_monitor(self, ctx) -> None:
        tx = self.system.tx
        d = self._divisor
        while True:
            _, _, line = await ctx.tick().sample(tx)
            if line:
                continue
            # Start bit seen (sampled at the edge); sample each bit in its middle.
            await ctx.tick().repeat(d // 2)
            byte = 0
            for i in range(8):
                await ctx.tick().repeat(d)
                byte |= ctx.get(tx) << i
            await ctx.tick().repeat(d)
            stop = ctx.get(tx)
            if stop:
                self._out.append(byte)
            await ctx.tick().repeat(max(1, d // 2 - 1))

    # ---- transport
    @property
    def cycles(self) -> int:
        """Clock cycles simulated so far."""
        return self._time_cycles

    def _advance(self, cycles: int) -> None:
        self._time_cycles += cycles
        self._sim.run_until(self._time_cycles * self._period)

    def write(self, data: bytes) -> int:
        self._inq.extend(data)
        return len(data)

    def read(self, n: int) -> bytes:
        """Up to ``n`` bytes: fewer only if ``timeout_cycles`` passed without them."""
        waited = 0
        step = 64
        while len(self._out) < n and waited < self.timeout_cycles:
            self._advance(step)
            waited += step
            step = min(step * 2, 4096)
        got = bytes(self._out[:n])
        del self._out[:n]
        return got

    def idle(self, seconds: float) -> None:
        self._advance(max(1, round(seconds * self.clk_hz)))

    def reset_input_buffer(self) -> None:
        self._out.clear()

    def close(self) -> None:
        if self._vcd_ctx is not None:
            self._vcd_ctx.__exit__(None, None, None)
            self._vcd_ctx = None
