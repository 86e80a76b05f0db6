"""The generated Verilog of the decoder (hw/decoder.py) under Verilator + cocotb.

Two builds, cached under build/rtl/ by ``shiftbook.sim.rtl.runner.build_model``: one lane
(max_k=2048, max_d=18, 6-bit codes) and a 2-lane ``DecoderArray`` (max_k=256, max_d=9). Each
runs several runtime (k, d) pairs with random idle cycles on the index stream and random
back-pressure on the code stream, every code checked against ``decode_model``, then runs
without stalls that count cycles (n codes in n + latency cycles), then the ``oob`` flag.

This file is both the pytest test and the cocotb test module (the simulator imports it by
name from this folder); the cocotb coroutines are not named ``test_*`` so pytest skips them.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.rtl

HERE = Path(__file__).resolve().parent
CODE_BITS = 6
# name: (lanes or 0 for a DecoderLane, max_k, max_d, (k, d) pairs run in one simulation)
BUILDS = {
    "lane": (0, 2048, 18, [(2, 1), (256, 1), (256, 4), (256, 9), (2048, 18), (2048, 8),
                           (200, 2)]),
    "array2": (2, 256, 9, [(2, 1), (256, 9), (100, 4)]),
}


@pytest.mark.parametrize("build", list(BUILDS))
def test_decoder_verilog(tmp_path, build):
    from shiftbook.sim.rtl import runner
    from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env
    try:
        setup_verilator_env()
    except ToolchainError as e:
        pytest.skip(str(e))
    from amaranth.back import verilog

    from shiftbook.hw.decoder import DecoderArray, DecoderLane

    lanes, max_k, max_d, _ = BUILDS[build]
    if lanes:
        dut = DecoderArray(lanes=lanes, max_k=max_k, max_d=max_d, code_bits=CODE_BITS)
    else:
        dut = DecoderLane(max_k=max_k, max_d=max_d, code_bits=CODE_BITS)
    top = f"shiftbook_decoder_{build}"
    text = verilog.convert(dut, name=top, emit_src=False)
    bdir = runner.build_model(top, {f"{top}.v": text},
                              label=f"decoder {build} k={max_k} d={max_d}")
    env = {"DEC_BUILD": build, "DEC_SEED": "5", "DEC_CODES": "400",
           "DEC_REPORT": str(tmp_path / "report.txt")}
    assert runner.run_cocotb(bdir, top, "test_decoder_rtl", test_dir=tmp_path, env=env,
                             log_file=tmp_path / "sim.log", pythonpath=[HERE]) == (1, 0)
    # The no-stall runs: n codes in n + latency cycles each (also checked inside).
    for line in (tmp_path / "report.txt").read_text().splitlines():
        n, cycles = (int(x) for x in line.split())
        assert cycles == n + dut.latency


# ---------------------------------------------------------------- cocotb side
try:
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, FallingEdge, ReadOnly
except ImportError:  # pragma: no cover - cocotb is a dev dependency
    cocotb = None


class _Geometry:
    """Widths of the build under test and (un)packing of index and code rows."""

    def __init__(self, build: str) -> None:
        from shiftbook.hw.decoder import index_bits

        self.lanes, self.max_k, self.max_d, self.pairs = BUILDS[build]
        self.n = max(1, self.lanes)
        self.ib = index_bits(self.max_k)

    def pack_indices(self, item: tuple[int, ...]) -> int:
        return sum(v << (j * self.ib) for j, v in enumerate(item))

    def unpack_codes(self, v: int) -> tuple[int, ...]:
        m = (1 << CODE_BITS) - 1
        return tuple((v >> (j * CODE_BITS)) & m for j in range(self.n))

    def model(self, items: list[tuple[int, ...]], codebook, d: int) -> list[tuple[int, ...]]:
        from shiftbook.hw.decoder import decode_model

        per_lane = [decode_model([it[j] for it in items], codebook, d) for j in range(self.n)]
        return list(zip(*per_lane, strict=True))


def _pack_row(row: list[int]) -> int:
    v = 0
    for j, c in enumerate(row):
        v |= (c & ((1 << CODE_BITS) - 1)) << (j * CODE_BITS)
    return v


async def _write_codebook(dut, codebook: list[list[int]]) -> None:
    dut.cb_en.value = (1 << len(codebook[0])) - 1
    for r, row in enumerate(codebook):
        dut.cb_addr.value = r
        dut.cb_data.value = _pack_row(row)
        await FallingEdge(dut.clk)
    dut.cb_en.value = 0


async def _stream(dut, geo: _Geometry, items: list[tuple[int, ...]], n_out: int,
                  rng: random.Random, gap: float, stall: float):
    """Drive index rows and take code rows, deciding every cycle at the falling edge; returns
    the code rows and the cycles of each index and code transfer (cycle 0 = the first)."""
    out: list[tuple[int, ...]] = []
    in_cycles: list[int] = []
    out_cycles: list[int] = []
    n_in = 0
    holding = False
    cycle = 0
    limit = 20 * n_out + 100
    while len(out) < n_out:
        assert cycle < limit, f"timeout: {len(out)} of {n_out} codes after {cycle} cycles"
        if not holding and n_in < len(items) and rng.random() >= gap:
            dut.i__valid.value = 1
            dut.i__payload.value = geo.pack_indices(items[n_in])
            holding = True
        elif not holding:
            dut.i__valid.value = 0
        dut.o__ready.value = int(rng.random() >= stall)
        await ReadOnly()
        if holding and int(dut.i__ready.value):
            in_cycles.append(cycle)
            n_in += 1
            holding = False
        if int(dut.o__valid.value) and int(dut.o__ready.value):
            out.append(geo.unpack_codes(int(dut.o__payload.value)))
            out_cycles.append(cycle)
        await FallingEdge(dut.clk)
        if not holding:
            dut.i__valid.value = 0
        cycle += 1
    dut.i__valid.value = 0
    dut.o__ready.value = 0
    assert n_in == len(items)
    return out, in_cycles, out_cycles


if cocotb is not None:

    @cocotb.test()
    async def decoder_random_stalls(dut):
        geo = _Geometry(os.environ["DEC_BUILD"])
        rng = random.Random(int(os.environ.get("DEC_SEED", "1")))
        n_codes = int(os.environ.get("DEC_CODES", "400"))

        def rows(k: int, count: int) -> list[tuple[int, ...]]:
            return [tuple(rng.randrange(k) for _ in range(geo.n)) for _ in range(count)]

        Clock(dut.clk, 10, unit="ns").start(start_high=False)
        for name in ("i__valid", "i__payload", "o__ready", "flush", "cb_en", "cb_addr",
                     "cb_data"):
            getattr(dut, name).value = 0
        dut.k.value = geo.max_k
        dut.d.value = geo.max_d
        dut.rst.value = 1
        await ClockCycles(dut.clk, 2)
        dut.rst.value = 0
        await FallingEdge(dut.clk)
        codebook = [[rng.randrange(1 << CODE_BITS) for _ in range(geo.max_d)]
                    for _ in range(geo.max_k)]
        await _write_codebook(dut, codebook)
        for k, d in geo.pairs:
            dut.k.value = k
            dut.d.value = d
            items = rows(k, max(4, n_codes // d))
            expect = geo.model(items, codebook[:k], d)
            for gap, stall in ((0.3, 0.3), (0.0, 0.6), (0.6, 0.0)):
                got, _, _ = await _stream(dut, geo, items, len(expect), rng, gap, stall)
                assert got == expect, f"k={k} d={d} gap={gap} stall={stall}: codes differ"
            await ClockCycles(dut.clk, 3, rising=False)
            assert int(dut.oob.value) == 0
        # Throughput: no gaps, no back-pressure, d = 1 (the hardest case) and d = max_d.
        report = []
        for d in (1, geo.max_d):
            dut.d.value = d
            items = rows(geo.max_k, 300 // d)
            expect = geo.model(items, codebook, d)
            got, in_c, out_c = await _stream(dut, geo, items, len(expect), rng, 0.0, 0.0)
            assert got == expect
            cycles = out_c[-1] - in_c[0] + 1
            assert cycles == len(expect) + 2, f"d={d}: {len(expect)} codes in {cycles} cycles"
            report.append(f"{len(expect)} {cycles}")
            await ClockCycles(dut.clk, 3, rising=False)
        # An index past k (in the last lane) raises the sticky oob flag.
        dut.k.value = 100
        dut.d.value = 1
        items = [(5,) * geo.n, (7,) * (geo.n - 1) + (100,), (9,) * geo.n]
        got, _, _ = await _stream(dut, geo, items, 3, rng, 0.0, 0.0)
        assert got == geo.model(items, codebook, 1)
        await FallingEdge(dut.clk)
        assert int(dut.oob.value) == 1
        path = os.environ.get("DEC_REPORT")
        if path:
            Path(path).write_text("\n".join(report) + "\n")
