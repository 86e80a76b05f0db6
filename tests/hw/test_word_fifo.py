"""WordFIFO (synchronously read storage, block-RAM friendly) against Amaranth's SyncFIFO: the
same outputs in every cycle under random traffic."""

from __future__ import annotations

import random

import pytest
from amaranth.hdl import Elaboratable, Module
from amaranth.lib.fifo import SyncFIFO

from shiftbook.hw.buffers import WordFIFO

from .helpers import run_sim


class _Pair(Elaboratable):
    def __init__(self, width: int, depth: int):
        self.ref = SyncFIFO(width=width, depth=depth)
        self.dut = WordFIFO(width=width, depth=depth)

    def elaborate(self, platform):
        m = Module()
        m.submodules.ref = self.ref
        m.submodules.dut = self.dut
        return m


@pytest.mark.parametrize("depth", [1, 3, 10, 16])
def test_word_fifo_matches_syncfifo(depth):
    pair = _Pair(8, depth)
    rng = random.Random(depth)
    checked = {"reads": 0}

    async def tb(ctx):
        for cycle in range(3000):
            # phases: mostly writing, mostly reading, balanced
            phase = (cycle // 300) % 3
            pw, pr = [(0.8, 0.3), (0.3, 0.8), (0.6, 0.6)][phase]
            w_en, r_en, data = rng.random() < pw, rng.random() < pr, rng.randrange(256)
            for f in (pair.ref, pair.dut):
                ctx.set(f.w_en, w_en)
                ctx.set(f.w_data, data)
                ctx.set(f.r_en, r_en)
            ref = [ctx.get(s) for s in (pair.ref.w_rdy, pair.ref.r_rdy, pair.ref.level)]
            got = [ctx.get(s) for s in (pair.dut.w_rdy, pair.dut.r_rdy, pair.dut.level)]
            assert got == ref, (cycle, got, ref)
            if ref[1]:
                assert ctx.get(pair.dut.r_data) == ctx.get(pair.ref.r_data), cycle
                checked["reads"] += r_en
            await ctx.tick()

    run_sim(pair, tb)
    assert checked["reads"] > 500
