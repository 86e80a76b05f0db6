"""Whole core under amaranth.sim on tiny configs: hand-assembled conv programs, results
checked against sw/numerics computed in the test."""

import dataclasses

import pytest

from shiftbook.config import PRESETS
from shiftbook.hw.core import Core
from shiftbook.isa import Insn, Mode, Opcode, encode_program

from .convprog import conv_case
from .helpers import ExtMemory, run_core, run_sim

TINY = dataclasses.replace(PRESETS["tiny"], abuf_bytes=512, wbuf_rows=64, bbuf_rows=4,
                           obuf_bytes=64, mem_words=4096)




def _check(cfg, **kw):
    image, expected, info = conv_case(cfg, **kw)
    mem, res = run_core(cfg, image)
    assert res["done"] == 1 and res["error"] == 0, res
    assert [m[0] for m in res["marks"]] == [1, 2, 7]
    bad = [(a, mem.mem[a] - 256 if mem.mem[a] > 127 else mem.mem[a], v)
           for a, v in expected.items()
           if (mem.mem[a] - 256 if mem.mem[a] > 127 else mem.mem[a]) != v]
    assert not bad, f"{len(bad)} wrong bytes, first (addr, got, want) {bad[:4]}"
    return res, info


def test_core_conv3x3_relu():
    _check(TINY, cin=3, cout=2, h=4, w=4, k=3, pad=1, seed=1)


def test_core_conv_residual_split_stride2():
    _check(TINY, cin=4, cout=2, h=5, w=5, k=3, pad=1, stride=2, residual=True, relu=False,
           seed=2, split=2)


@pytest.mark.parametrize("mode", [Mode.MAX, Mode.SUM])
def test_core_pool_modes(mode):
    _check(TINY, cin=1, cout=2, h=4, w=4, k=2, pad=0, stride=2, mode=mode, relu=False, seed=3)


def test_core_illegal_opcode():
    blob = encode_program([Insn(Opcode.MARK, {"id": 1})]) + (9).to_bytes(16, "little")
    mem, res = run_core(TINY, blob, max_cycles=200)
    assert res["error"] == 1 and res["done"] == 0
    assert [m[0] for m in res["marks"]] == [1]


def test_core_memory_stalls():
    import random

    rng = random.Random(5)
    stalls = [rng.random() < 0.3 for _ in range(50000)]
    image, expected, info = conv_case(TINY, cin=2, cout=2, h=3, w=5, k=3, pad=1, seed=4)
    mem, res = run_core(TINY, image, stall=lambda c: stalls[c % len(stalls)])
    assert res["done"] == 1
    got = {a: (mem.mem[a] ^ 0x80) - 0x80 for a in expected}
    assert got == expected


@pytest.mark.parametrize("bus_bytes,latency", [(1, 1), (4, 3), (16, 2), (32, 7)])
def test_core_bus_widths(bus_bytes, latency):
    cfg = dataclasses.replace(TINY, bus_bytes=bus_bytes, mem_latency=latency)
    _check(cfg, cin=2, cout=2, h=3, w=3, k=3, pad=1, seed=bus_bytes)


def test_core_mult_pe_and_wide_array():
    cfg = dataclasses.replace(TINY, rows=3, cols=4, pe="mult")
    _check(cfg, cin=2, cout=3, h=4, w=3, k=3, pad=1, seed=6)


@pytest.mark.parametrize("kw", [
    dict(cin=3, cout=2, h=4, w=4, k=3, pad=1, seed=11),
    dict(cin=4, cout=2, h=5, w=4, k=3, pad=1, stride=2, residual=True, relu=False, seed=12,
         split=2),
    dict(cin=2, cout=2, h=4, w=4, k=2, pad=0, stride=2, mode=Mode.MAX, relu=False, seed=13),
])
def test_core_matches_functional_simulator(kw):
    functional = pytest.importorskip("shiftbook.sim.functional")
    image, expected, info = conv_case(TINY, **kw)
    mem, res = run_core(TINY, image)
    ref = functional.run_program(TINY, image)
    n = len(image)
    assert bytes(mem.mem[:n]) == bytes(ref.memory[:n])
    assert [m[0] for m in res["marks"]] == [m[0] for m in ref.marks]


@pytest.mark.parametrize("cin,k", [(1, 1), (2, 1), (3, 1), (4, 1), (5, 1), (1, 3)])
def test_core_short_reductions_back_to_back_drains(cin, k):
    # K = cin*k*k steps per tile, fewer than the drain of the previous tile takes
    cfg = dataclasses.replace(TINY, rows=4)
    _check(cfg, cin=cin, cout=2, h=3, w=5, k=k, pad=k // 2, residual=True, seed=20 + cin + k)


def test_core_back_to_back_computes_take_k_cycles_each():
    cfg = dataclasses.replace(TINY, rows=2, cols=2)
    res, info = _check(cfg, cin=4, cout=2, h=4, w=4, k=3, pad=1, seed=30)
    marks = dict(res["marks"])
    steps = info["ideal_steps"]          # 8 tiles x 36 steps
    # from the first COMPUTE's issue to the end of the last drain: the steps plus the
    # first tile's pixel walk, the pipeline and the last drain, no per-tile bubbles
    assert steps <= marks[2] - marks[1] <= steps + 20, (marks, steps)


@pytest.mark.parametrize("cols,bus_bytes", [(3, 4), (6, 2)])
def test_core_odd_column_counts(cols, bus_bytes):
    # CoreConfig pads WGT/BIAS rows to a power-of-two number of bus words
    cfg = dataclasses.replace(TINY, cols=cols, bus_bytes=bus_bytes)
    _check(cfg, cin=2, cout=cols, h=3, w=4, k=3, pad=1, seed=40 + cols)


def test_core_restart_after_done():
    blob = encode_program([Insn(Opcode.MARK, {"id": 3}), Insn(Opcode.NOP),
                           Insn(Opcode.MARK, {"id": 4}), Insn(Opcode.END)])
    dut = Core(TINY)
    mem = ExtMemory(TINY.mem_words, TINY.bus_bytes, TINY.mem_latency, blob)
    runs = []

    async def tb(ctx):
        for _ in range(2):
            ctx.set(dut.start, 1)
            await ctx.tick()
            ctx.set(dut.start, 0)
            marks = []
            for _ in range(200):
                _, _, done, mv, mid, busy = await ctx.tick().sample(
                    dut.done, dut.mark_valid, dut.mark_id, dut.busy)
                if mv:
                    marks.append(mid)
                if done and not busy:
                    break
            runs.append((marks, ctx.get(dut.done), ctx.get(dut.error), ctx.get(dut.cycles)))

    run_sim(dut, tb, processes=[mem.process(dut)])
    assert runs[0][:3] == ([3, 4], 1, 0)
    assert runs[1][:3] == ([3, 4], 1, 0)
    assert abs(runs[1][3] - runs[0][3]) <= TINY.mem_latency + 2


def test_core_short_tiles_have_no_bubbles():
    # 16 tiles of 4 pixels x 4 steps (1x1 conv, 4 channels): K = npix = rows, so the pixel
    # walk (2 rows/cycle) and the drains (accepted with <= 4 rows left) hide behind K
    cfg = dataclasses.replace(TINY, rows=4)
    res, info = _check(cfg, cin=4, cout=2, h=8, w=8, k=1, pad=0, seed=31)
    marks = dict(res["marks"])
    assert info["ideal_steps"] == 64
    assert marks[2] - marks[1] <= 64 + 20, marks


@pytest.mark.parametrize("over,kw", [
    (dict(rows=1, cols=1, bus_bytes=64, mem_latency=9, acc_bits=48, exp_bits=5,
          abuf_bytes=1024, obuf_bytes=128), dict(cin=2, cout=1, residual=True)),
    (dict(rows=5, cols=4, bus_bytes=1, mem_latency=1, acc_bits=24, exp_bits=3),
     dict(cin=3, cout=4)),
])
def test_core_extreme_configs(over, kw):
    _check(dataclasses.replace(TINY, **over), h=4, w=3, k=3, pad=1, seed=50, **kw)
