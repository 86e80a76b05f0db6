"""Shared amaranth.sim helpers for the gateware tests."""

from __future__ import annotations

import os

from amaranth.sim import Simulator

__all__ = ["run_sim", "ExtMemory"]


def run_sim(dut, *testbenches, processes=(), vcd: str | None = None, deadline=None) -> None:
    """Simulate ``dut`` with a 1 MHz clock and the given async testbenches.

    Set ``SHIFTBOOK_WAVES=dir`` to write a VCD per test (named after the first testbench).
    """
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    for p in processes:
        sim.add_process(p)
    waves = os.environ.get("SHIFTBOOK_WAVES")
    if vcd is None and waves and testbenches:
        os.makedirs(waves, exist_ok=True)
        vcd = os.path.join(waves, testbenches[0].__name__ + ".vcd")
    if vcd:
        with sim.write_vcd(vcd):
            sim.run_until(deadline) if deadline else sim.run()
    else:
        sim.run_until(deadline) if deadline else sim.run()


class ExtMemory:
    """The external memory model of docs/isa.md for an amaranth.sim process: a request is
    accepted when ``cmd_valid & cmd_ready``; a read returns ``latency`` cycles later, in order.
    ``stall`` (a callable of the cycle number) may deassert ``cmd_ready``."""

    def __init__(self, words: int, bus_bytes: int, latency: int, image: bytes = b"",
                 stall=None):
        self.bus_bytes = bus_bytes
        self.latency = latency
        self.mem = bytearray(words * bus_bytes)
        self.mem[:len(image)] = image
        self.stall = stall
        self.reads = 0
        self.writes = 0

    def word(self, a: int) -> int:
        b = self.bus_bytes
        a %= len(self.mem) // b
        return int.from_bytes(self.mem[a * b:(a + 1) * b], "little")

    def process(self, port):
        """An async process driving ``port`` (an object with cmd_*/rsp_* signals)."""
        async def proc(ctx):
            pipe: list[int | None] = [None] * self.latency
            cycle = 0
            while True:
                ready = 0 if (self.stall and self.stall(cycle)) else 1
                ctx.set(port.cmd_ready, ready)
                rsp = pipe.pop(0)
                if rsp is not None:
                    ctx.set(port.rsp_valid, 1)
                    ctx.set(port.rsp_data, rsp)
                else:
                    ctx.set(port.rsp_valid, 0)
                # sample the request at the clock edge
                _, _, valid, addr, we, wdata = await ctx.tick().sample(
                    port.cmd_valid, port.cmd_addr, port.cmd_we, port.cmd_wdata)
                new = None
                if valid and ready:
                    if we:
                        b = self.bus_bytes
                        a = addr % (len(self.mem) // b)
                        self.mem[a * b:(a + 1) * b] = int(wdata).to_bytes(b, "little")
                        self.writes += 1
                    else:
                        new = self.word(addr)
                        self.reads += 1
                pipe.append(new)
                cycle += 1
        return proc


def run_core(cfg, image: bytes, *, stall=None, max_cycles: int = 30000):
    """Run a whole ``Core`` on a memory image under amaranth.sim until done/error.

    Returns ``(ExtMemory, {"done", "error", "cycles", "marks"})``.
    """
    from shiftbook.hw.core import Core

    dut = Core(cfg)
    mem = ExtMemory(cfg.mem_words, cfg.bus_bytes, cfg.mem_latency, image, stall=stall)
    result: dict = {}

    async def tb(ctx):
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        marks = []
        for _ in range(max_cycles):
            _, _, done, error, mv, mid, cyc = await ctx.tick().sample(
                dut.done, dut.error, dut.mark_valid, dut.mark_id, dut.cycles)
            if mv:
                marks.append((mid, cyc))
            if done or error:
                break
        result.update(done=ctx.get(dut.done), error=ctx.get(dut.error),
                      cycles=ctx.get(dut.cycles), marks=marks)

    run_sim(dut, tb, processes=[mem.process(dut)])
    return mem, result

