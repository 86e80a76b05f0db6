"""cocotb test of sim/rtl/extmem.v on its own: driver, monitor, model and checker.

Random reads and writes every cycle (random idle cycles too); the checker demands each read
response exactly LATENCY edges after the accepting edge, in order, with the data the model
holds at acceptance; cmd_ready stalls follow +stall_seed. The image loaded with +image and
the image dumped on ``dump`` are checked against the model. Expectations come from the
environment (set by tests/sim/test_rtl_extmem.py).
"""

from __future__ import annotations

import os
import random
from collections import deque
from pathlib import Path

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge, RisingEdge


def _env(name: str) -> int:
    return int(os.environ[name])


@cocotb.test()
async def random_traffic(dut):
    bus = _env("EXTMEM_BUS_BYTES")
    latency = _env("EXTMEM_LATENCY")
    words = _env("EXTMEM_WORDS")
    stall = _env("EXTMEM_STALL")
    image_words = _env("EXTMEM_IMAGE_WORDS")
    cycles = _env("EXTMEM_CYCLES")
    rng = random.Random(_env("EXTMEM_SEED"))
    mask = (1 << (8 * bus)) - 1

    # model: the image file (most significant byte first per line) is what memory starts as
    model = [0] * words
    for i, line in enumerate(Path(os.environ["EXTMEM_IMAGE"]).read_text().split()):
        model[i] = int(line, 16)

    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    dut.rst.value = 1
    dut.cmd_valid.value = 0
    dut.cmd_addr.value = 0
    dut.cmd_we.value = 0
    dut.cmd_wdata.value = 0
    dut.dump.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0

    # Drive and sample at falling edges (mid-cycle: everything settled). A request driven at
    # falling edge n with cmd_ready high is accepted at rising edge n+1; its response must be
    # visible at falling edge n+LATENCY.
    expect: deque[tuple[int, int]] = deque()  # (falling edge index, data)
    valid, addr, we, wdata = False, 0, False, 0
    refused = False
    stalls = accepted_reads = accepted_writes = 0
    high = 0

    def check_response(n: int) -> None:
        want = expect.popleft()[1] if expect and expect[0][0] == n else None
        got_valid = int(dut.rsp_valid.value)
        assert got_valid == (want is not None), \
            f"edge {n}: rsp_valid={got_valid}, expected {int(want is not None)}"
        if want is not None:
            got = int(dut.rsp_data.value)
            assert got == want, f"edge {n}: rsp_data={got:#x}, expected {want:#x}"

    for n in range(cycles):
        await FallingEdge(dut.clk)
        check_response(n)
        # cmd_ready is registered: what we see now holds at the next rising edge
        ready = int(dut.cmd_ready.value)
        if not stall:
            assert ready == 1, f"edge {n}: cmd_ready low without stalls"
        stalls += 1 - ready
        # driver: a refused request stays on the bus unchanged, as a bus master must
        if not refused:
            if rng.random() < 0.2:
                valid = False
            else:
                valid = True
                addr = rng.randrange(words)
                we = rng.random() < 0.4
                wdata = rng.getrandbits(8 * bus) & mask
        dut.cmd_valid.value = int(valid)
        dut.cmd_addr.value = addr
        dut.cmd_we.value = int(we)
        dut.cmd_wdata.value = wdata
        refused = valid and not ready
        if valid and ready:  # accepted at rising edge n+1
            if we:
                model[addr] = wdata
                accepted_writes += 1
                high = max(high, addr + 1)
            else:
                expect.append((n + latency, model[addr]))
                accepted_reads += 1

    for n in range(cycles, cycles + latency + 2):
        await FallingEdge(dut.clk)
        dut.cmd_valid.value = 0
        check_response(n)
    assert not expect
    assert int(dut.reads.value) == accepted_reads
    assert int(dut.writes.value) == accepted_writes
    assert int(dut.fault.value) == 0
    if stall:
        pct = _env("EXTMEM_STALL_PCT")
        frac = stalls / cycles
        assert abs(frac - pct / 100) < 0.1, f"stalled {frac:.2f} of cycles, want {pct}%"
    else:
        assert stalls == 0

    # dump: rising `dump` writes words [0, max(image_words, high)) to +dump_file
    await FallingEdge(dut.clk)
    dut.dump.value = 1
    await ClockCycles(dut.clk, 2)
    dut.dump.value = 0
    await RisingEdge(dut.clk)
    lines = [ln for ln in Path(os.environ["EXTMEM_DUMP"]).read_text().split()
             if not ln.startswith("//")]
    assert len(lines) == max(image_words, high)
    for i, ln in enumerate(lines):
        assert int(ln, 16) == model[i], f"dumped word {i}: {ln}, expected {model[i]:#x}"

    # an address beyond WORDS raises the sticky fault flag
    await FallingEdge(dut.clk)
    while not int(dut.cmd_ready.value):
        await FallingEdge(dut.clk)
    dut.cmd_valid.value = 1
    dut.cmd_addr.value = words + 5
    dut.cmd_we.value = 0
    await FallingEdge(dut.clk)
    dut.cmd_valid.value = 0
    await ClockCycles(dut.clk, 2)
    assert int(dut.fault.value) == 1
    assert int(dut.fault_addr.value) == words + 5
