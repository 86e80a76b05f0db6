"""cocotb test of one generated PE (hw/pe.py, Verilog from Amaranth): random steps with random
idle cycles, every cycle checked against the PE's bit-exact ``pe_model``. Configuration in
environment variables set by tests/sim/test_rtl_pe.py."""

from __future__ import annotations

import os
import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, FallingEdge

from shiftbook.hw.pe import pe_model


def _signed(v: int, bits: int) -> int:
    return v - (1 << bits) if v >> (bits - 1) else v


@cocotb.test()
async def random_steps(dut):
    acc_bits = int(os.environ["PE_ACC_BITS"])
    exp_bits = int(os.environ["PE_EXP_BITS"])
    kind = os.environ["PE_KIND"]
    steps = int(os.environ["PE_STEPS"])
    rng = random.Random(int(os.environ["PE_SEED"]))
    mask = (1 << acc_bits) - 1

    Clock(dut.clk, 10, unit="ns").start(start_high=False)
    for name in ("en", "first", "valid", "mode", "x", "code", "load", "shift", "drain_in"):
        getattr(dut, name).value = 0
    dut.rst.value = 1
    await ClockCycles(dut.clk, 2)
    dut.rst.value = 0
    await FallingEdge(dut.clk)
    acc = drain = 0
    for n in range(steps):
        en = rng.random() < 0.75               # idle cycles in between
        first = rng.random() < 0.15
        valid = rng.random() < 0.85            # padding positions
        mode = rng.choice([0, 0, 0, 1, 2])     # mostly MAC
        x = rng.randrange(-128, 128)
        code = rng.randrange(256)
        load = rng.random() < 0.2
        shift = rng.random() < 0.3
        drain_in = _signed(rng.getrandbits(acc_bits), acc_bits)
        for name, v in (("en", en), ("first", first), ("valid", valid), ("mode", mode),
                        ("load", load), ("shift", shift)):
            getattr(dut, name).value = int(v)
        dut.x.value = x & 0xFF
        dut.code.value = code
        dut.drain_in.value = drain_in & mask
        # model of the edge between this falling edge and the next
        nxt = pe_model(acc, x, code, valid=valid, mode=mode, first=first, acc_bits=acc_bits,
                       exp_bits=exp_bits, kind=kind)
        if en and load:
            drain = nxt
        elif shift:
            drain = drain_in
        if en:
            acc = nxt
        await FallingEdge(dut.clk)
        got_acc = _signed(int(dut.acc.value), acc_bits)
        got_drain = _signed(int(dut.drain.value), acc_bits)
        assert got_acc == acc, f"step {n}: acc={got_acc}, model {acc}"
        assert got_drain == drain, f"step {n}: drain={got_drain}, model {drain}"
