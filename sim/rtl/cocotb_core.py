"""cocotb test module that runs one program on ``shiftbook_sim_top`` (core + external memory).

Started by :mod:`shiftbook.sim.rtl.runner` inside the Verilator binary; never imported by user
code. Python only acts at a handful of points (reset, start, the end of the run, the dump), so
the simulation runs at Verilator speed: the clock is cocotb's C++ (GPI) clock, the run's cycle
count and the MARK log are kept in Verilog (``sim_top.v``), and the end of the run is a single
``First(RisingEdge(done), RisingEdge(error), RisingEdge(fault), Timer(timeout))``.

Inputs come in environment variables (set by the runner):

``SHIFTBOOK_RTL_RESULT``
    path of the JSON file this module writes (status, cycle counts, memory traffic).
``SHIFTBOOK_RTL_TIMEOUT``
    cycles after start before the run is declared hung (0: no limit).
``SHIFTBOOK_RTL_PROGRESS``
    ``1``: print MARKs as they arrive (at most one line per second of wall time).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, First, ReadOnly, RisingEdge, Timer

CLOCK_PERIOD_NS = 10
RESET_CYCLES = 4


async def _watch_marks(dut: Any, t0: float) -> None:
    """Print MARKs while the core runs (throttled); costs one wake-up per MARK pulse."""
    last_print = 0.0
    count = 0
    while True:
        await RisingEdge(dut.mark_valid)
        await ReadOnly()
        count += 1
        now = time.monotonic()
        if now - last_print >= 1.0:
            last_print = now
            print(f"[rtl] mark {int(dut.mark_id.value)} (#{count}) at cycle "
                  f"{int(dut.cycles.value)}, {now - t0:.1f} s", flush=True)


@cocotb.test()
async def run_program(dut: Any) -> None:
    result_path = os.environ["SHIFTBOOK_RTL_RESULT"]
    timeout = int(os.environ.get("SHIFTBOOK_RTL_TIMEOUT", "0"))
    progress = os.environ.get("SHIFTBOOK_RTL_PROGRESS", "0") == "1"

    Clock(dut.clk, CLOCK_PERIOD_NS, unit="ns").start(start_high=False)
    dut.rst.value = 1
    dut.start.value = 0
    dut.dump.value = 0
    await ClockCycles(dut.clk, RESET_CYCLES)
    dut.rst.value = 0
    await RisingEdge(dut.clk)
    dut.start.value = 1
    await RisingEdge(dut.clk)
    dut.start.value = 0
    t0 = time.monotonic()
    c0 = time.process_time()

    watcher = cocotb.start_soon(_watch_marks(dut, t0)) if progress else None
    ends: list[Any] = [RisingEdge(dut.done), RisingEdge(dut.error), RisingEdge(dut.fault)]
    if timeout > 0:
        ends.append(Timer(timeout * CLOCK_PERIOD_NS, unit="ns"))
    await First(*ends)
    wall = time.monotonic() - t0
    cpu = time.process_time() - c0
    if watcher is not None:
        watcher.cancel()

    # One more edge so that sim_top's run counter has seen done/error, then dump memory.
    await RisingEdge(dut.clk)
    dut.dump.value = 1
    await ClockCycles(dut.clk, 2)
    dut.dump.value = 0
    await ReadOnly()

    if int(dut.fault.value):
        status = "fault"
    elif int(dut.error.value):
        status = "error"
    elif int(dut.done.value):
        status = "done"
    else:
        status = "timeout"
    out = {
        "status": status,
        "run_cycles": int(dut.run_cycles.value),
        "core_cycles": int(dut.cycles.value),
        "mark_count": int(dut.mark_count.value),
        "mem_reads": int(dut.mem_reads.value),
        "mem_writes": int(dut.mem_writes.value),
        "fault_addr": int(dut.fault_addr.value),
        "sim_wall_s": wall,
        "sim_cpu_s": cpu,
    }
    with open(result_path, "w") as f:
        json.dump(out, f)
    if progress:
        cyc = out["run_cycles"]
        print(f"[rtl] {status} after {cyc} cycles in {wall:.2f} s "
              f"({cyc / max(wall, 1e-9):,.0f} cycles/s, {cyc / max(cpu, 1e-9):,.0f} per CPU s)",
              flush=True)
