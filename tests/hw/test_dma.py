"""DMA: 2-D walks, streaming throughput, stores under back-pressure."""

import dataclasses
import random

from shiftbook.config import PRESETS
from shiftbook.hw.dma import DMA
from shiftbook.isa import Buf

from .helpers import ExtMemory, run_sim

CFG = dataclasses.replace(PRESETS["tiny"], mem_latency=6, mem_words=1024)


def _issue(ctx, dut, **f):
    ctx.set(dut.issue.insn.valid, 1)
    for k, v in f.items():
        ctx.set(getattr(dut.issue.insn.payload, k), v)


def test_load_2d_streams_one_word_per_cycle():
    dut = DMA(CFG)
    image = b"".join(i.to_bytes(8, "little") for i in range(1024))
    mem = ExtMemory(1024, 8, CFG.mem_latency, image)
    writes = []
    t = {}
    words, runs = 40, 3

    async def tb(ctx):
        _issue(ctx, dut, store=0, buf=Buf.WGT, ext_addr=100, buf_addr=7, words=words,
               runs=runs, ext_stride=50, buf_stride=64)
        await ctx.tick()
        ctx.set(dut.issue.insn.valid, 0)
        for cyc in range(1000):
            _, _, en, buf, addr, data, busy = await ctx.tick().sample(
                dut.buf.wr_en, dut.buf.wr_buf, dut.buf.wr_addr, dut.buf.wr_data, dut.issue.busy)
            if en:
                writes.append((buf, addr, data))
            if not busy and cyc > 2:
                t["cycles"] = cyc
                break

    run_sim(dut, tb, processes=[mem.process(dut.mem)])
    want = [(Buf.WGT, 7 + r * 64 + w, 100 + r * 50 + w) for r in range(runs)
            for w in range(words)]
    assert writes == want, (writes, want)
    # one word per cycle plus the memory latency and a few cycles of pipeline
    assert t["cycles"] <= words * runs + CFG.mem_latency + 4, t


def test_store_with_backpressure():
    dut = DMA(CFG)
    rng = random.Random(1)
    stalls = [rng.random() < 0.4 for _ in range(4000)]
    mem = ExtMemory(1024, 8, CFG.mem_latency, stall=lambda c: stalls[c])
    out_words = {a: rng.getrandbits(64) for a in range(2048)}

    async def out_buffer(ctx):
        # OUT's word read port: data one cycle after r_en, held otherwise
        async for _, _, en, addr in ctx.tick().sample(dut.buf.out_r_en, dut.buf.out_r_addr):
            if en:
                ctx.set(dut.buf.out_r_data, out_words[addr])

    async def tb(ctx):
        # a zero-size instruction is a no-op, then the real store
        _issue(ctx, dut, store=1, buf=Buf.OUT, ext_addr=0, buf_addr=0, words=0, runs=5,
               ext_stride=0, buf_stride=0)
        await ctx.tick()
        _issue(ctx, dut, store=1, buf=Buf.OUT, ext_addr=300, buf_addr=20, words=9, runs=4,
               ext_stride=16, buf_stride=256)
        await ctx.tick()
        ctx.set(dut.issue.insn.valid, 0)
        for _ in range(400):
            await ctx.tick()
            if not ctx.get(dut.issue.busy):
                break
        assert not ctx.get(dut.issue.busy)

    run_sim(dut, tb, processes=[mem.process(dut.mem), out_buffer])
    assert mem.writes == 36
    for r in range(4):
        for w in range(9):
            assert mem.word(300 + 16 * r + w) == out_words[20 + 256 * r + w]
    assert mem.word(300 + 9) == 0



def test_store_streams_one_word_per_cycle():
    dut = DMA(CFG)
    mem = ExtMemory(1024, 8, CFG.mem_latency)
    t = {}

    async def out_buffer(ctx):
        async for _, _, en, addr in ctx.tick().sample(dut.buf.out_r_en, dut.buf.out_r_addr):
            if en:
                ctx.set(dut.buf.out_r_data, addr * 3 + 1)

    async def tb(ctx):
        _issue(ctx, dut, store=1, buf=Buf.OUT, ext_addr=500, buf_addr=0, words=64, runs=2,
               ext_stride=100, buf_stride=256)
        await ctx.tick()
        ctx.set(dut.issue.insn.valid, 0)
        for cyc in range(400):
            await ctx.tick()
            if not ctx.get(dut.issue.busy):
                t["cycles"] = cyc
                break

    run_sim(dut, tb, processes=[mem.process(dut.mem), out_buffer])
    assert mem.writes == 128
    assert t["cycles"] <= 128 + 3, t
    assert mem.word(500 + 100 + 63) == (256 + 63) * 3 + 1
