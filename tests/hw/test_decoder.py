"""hw.decoder under amaranth.sim: random gaps and back-pressure against model(), throughput."""

from __future__ import annotations

import gc
import os
import random
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable
from amaranth.sim import Simulator

from shiftbook.hw.decoder import DecoderArray, DecoderLane, decode_model, index_bits

CODE_BITS = 6  # CoreConfig.code_bits for exp_bits=4


def random_codebook(rng: random.Random, k: int, max_d: int, code_bits: int = CODE_BITS):
    return [[rng.randrange(1 << code_bits) for _ in range(max_d)] for _ in range(k)]


async def write_codebook(ctx, dut, codebook, *, per_code: bool = False):
    """Fill the codebook through the write port: a row per cycle, or one code per cycle."""
    full = (1 << dut.max_d) - 1
    for r, row in enumerate(codebook):
        ctx.set(dut.cb_addr, r)
        if per_code:
            for j, c in enumerate(row):
                ctx.set(dut.cb_data[j], c)
                ctx.set(dut.cb_en, 1 << j)
                await ctx.tick()
        else:
            for j, c in enumerate(row):
                ctx.set(dut.cb_data[j], c)
            ctx.set(dut.cb_en, full)
            await ctx.tick()
    ctx.set(dut.cb_en, 0)


class Bench:
    """A driver (random idle cycles), a monitor (random back-pressure) and a cycle log."""

    def __init__(self, dut, codebook, *, k: int, d: int, items, n_out: int,
                 gap: float = 0.0, stall: float = 0.0, seed: int = 0, per_code: bool = False,
                 lanes: int | None = None) -> None:
        self.dut, self.codebook, self.k, self.d = dut, codebook, k, d
        self.items, self.n_out = list(items), n_out
        self.gap, self.stall, self.per_code, self.lanes = gap, stall, per_code, lanes
        self.rng_in = random.Random(seed * 2 + 1)
        self.rng_out = random.Random(seed * 2 + 2)
        self.loaded = False
        self.done = False
        self.cycle = 0
        self.offer_cycles: list[int] = []  # first cycle each index is valid
        self.in_cycles: list[int] = []   # cycle of each index transfer
        self.out_cycles: list[int] = []  # cycle of each code transfer
        self.valid_log: list[int] = []   # o.valid per cycle after loading
        self.out: list = []

    def _payload(self, p):
        if self.lanes is None:
            return int(p)
        return [int(p[j]) for j in range(self.lanes)]

    async def clock(self, ctx):
        async for _clk, _rst, valid in ctx.tick().sample(self.dut.o.valid):
            if self.loaded:
                self.cycle += 1
                self.valid_log.append(int(valid))

    async def driver(self, ctx):
        dut = self.dut
        ctx.set(dut.k, self.k)
        ctx.set(dut.d, self.d)
        await write_codebook(ctx, dut, self.codebook, per_code=self.per_code)
        self.loaded = True
        for item in self.items:
            while self.rng_in.random() < self.gap:
                await ctx.tick()
            self.offer_cycles.append(self.cycle)
            ctx.set(dut.i.valid, 1)
            if self.lanes is None:
                ctx.set(dut.i.payload, item)
            else:
                for j, v in enumerate(item):
                    ctx.set(dut.i.payload[j], v)
            while True:
                _clk, _rst, ready = await ctx.tick().sample(dut.i.ready)
                if ready:
                    break
                if self.done:  # the monitor gave up (or saw every code it expects)
                    return
            self.in_cycles.append(self.cycle - 1)
            ctx.set(dut.i.valid, 0)

    async def monitor(self, ctx):
        dut = self.dut
        while not self.loaded:
            await ctx.tick()
        limit = 20 * self.n_out + 200
        while len(self.out) < self.n_out:
            if self.cycle > limit:
                self.done = True
                raise AssertionError(f"timeout: {len(self.out)} of {self.n_out} codes after "
                                     f"{self.cycle} cycles")
            ctx.set(dut.o.ready, self.rng_out.random() >= self.stall)
            _clk, _rst, valid, ready, payload = await ctx.tick().sample(
                dut.o.valid, dut.o.ready, dut.o.payload)
            if valid and ready:
                self.out.append(self._payload(payload))
                self.out_cycles.append(self.cycle - 1)
        self.done = True
        ctx.set(dut.o.ready, 0)
        await ctx.tick().repeat(4)

    def run(self, vcd: str | None = None):
        """Simulate; ``SHIFTBOOK_WAVES=dir`` writes a VCD per bench into ``dir``."""
        waves = os.environ.get("SHIFTBOOK_WAVES")
        if vcd is None and waves:
            os.makedirs(waves, exist_ok=True)
            vcd = os.path.join(waves, f"decoder_{type(self.dut).__name__}_k{self.k}_"
                                      f"d{self.d}.vcd")
        sim = Simulator(self.dut)
        sim.add_clock(1e-8)
        sim.add_process(self.clock)
        sim.add_testbench(self.driver)
        sim.add_testbench(self.monitor)
        if vcd:
            with sim.write_vcd(vcd):
                sim.run()
        else:
            sim.run()
        return self


# (max_k, max_d, k, d): several pairs with d = 1, 4, 9, 18 and k = 2, 256, 2048.
LANE_CASES = [
    (256, 9, 2, 1),
    (256, 9, 256, 1),
    (256, 9, 256, 4),
    (256, 9, 256, 9),
    (2048, 18, 2048, 18),
    (2048, 18, 2048, 8),
    (2048, 18, 2, 18),
    (2048, 18, 200, 9),
]


@pytest.mark.parametrize("max_k,max_d,k,d", LANE_CASES)
def test_lane_random_gaps_and_backpressure(max_k, max_d, k, d):
    rng = random.Random(1000 * k + d)
    codebook = random_codebook(rng, k, max_d)
    n_idx = max(8, 240 // d)
    indices = [rng.randrange(k) for _ in range(n_idx)]
    dut = DecoderLane(max_k=max_k, max_d=max_d, code_bits=CODE_BITS)
    expect = dut.model(indices, codebook, d)
    assert len(expect) == n_idx * d
    b = Bench(dut, codebook, k=k, d=d, items=indices, n_out=len(expect), gap=0.3, stall=0.3,
              seed=k + d).run()
    assert b.out == expect


@pytest.mark.parametrize("d", [1, 2, 4, 9, 18])
def test_lane_throughput_no_bubbles(d):
    """Without gaps or back-pressure, n codes take n + latency cycles and o never idles."""
    rng = random.Random(d)
    k = 64
    codebook = random_codebook(rng, k, 18)
    indices = [rng.randrange(k) for _ in range(max(6, 120 // d))]
    dut = DecoderLane(max_k=64, max_d=18, code_bits=CODE_BITS)
    expect = dut.model(indices, codebook, d)
    b = Bench(dut, codebook, k=k, d=d, items=indices, n_out=len(expect)).run()
    assert b.out == expect
    n = len(expect)
    first_in = b.in_cycles[0]
    # The last code transfers in cycle n - 1 + latency, counting the first index's cycle as 0:
    assert b.out_cycles[-1] - first_in + 1 == n + dut.latency
    assert b.out_cycles[0] - first_in == dut.latency
    # Steady state: one code every cycle, and one index every d cycles.
    assert b.out_cycles == list(range(b.out_cycles[0], b.out_cycles[0] + n))
    assert [c - first_in for c in b.in_cycles] == [j * d for j in range(len(indices))]


@pytest.mark.parametrize("d", [1, 3, 9])
def test_lane_timing_with_gaps(d):
    """Without back-pressure, an index is taken as soon as it is offered and the previous
    codeword's last code has left the row (index n at ``max(offer_n, taken_{n-1} + d)``), and
    its codes appear ``latency`` cycles later, one per cycle."""
    rng = random.Random(70 + d)
    codebook = random_codebook(rng, 32, 9)
    indices = [rng.randrange(32) for _ in range(max(12, 150 // d))]
    dut = DecoderLane(max_k=32, max_d=9, code_bits=CODE_BITS)
    expect = dut.model(indices, codebook, d)
    b = Bench(dut, codebook, k=32, d=d, items=indices, n_out=len(expect), gap=0.5,
              seed=d).run()
    assert b.out == expect
    want_in: list[int] = []
    for n, offer in enumerate(b.offer_cycles):
        want_in.append(offer if n == 0 else max(offer, want_in[-1] + d))
    assert b.in_cycles == want_in
    assert b.out_cycles == [t + dut.latency + j for t in want_in for j in range(d)]


@pytest.mark.parametrize("d", [1, 3, 9])
def test_lane_backpressure_costs_nothing_extra(d):
    """With the input always valid, o.valid never drops once started: every cycle the consumer
    is ready moves a code (the decoder itself adds no bubbles under back-pressure)."""
    rng = random.Random(50 + d)
    codebook = random_codebook(rng, 32, 9)
    indices = [rng.randrange(32) for _ in range(max(10, 200 // d))]
    dut = DecoderLane(max_k=32, max_d=9, code_bits=CODE_BITS)
    expect = dut.model(indices, codebook, d)
    b = Bench(dut, codebook, k=32, d=d, items=indices, n_out=len(expect), stall=0.5,
              seed=d).run()
    assert b.out == expect
    first = b.out_cycles[0]
    assert all(b.valid_log[first:b.out_cycles[-1] + 1])


def test_lane_oob_flag():
    """An index >= k sets the sticky oob flag; indices < k do not."""
    rng = random.Random(7)
    codebook = random_codebook(rng, 16, 4)

    def run(indices):
        dut = DecoderLane(max_k=16, max_d=4, code_bits=CODE_BITS)
        b = Bench(dut, codebook, k=10, d=4, items=indices, n_out=4 * len(indices))
        flags = []

        async def watch(ctx):
            async for _c, _r, oob in ctx.tick().sample(dut.oob):
                flags.append(int(oob))
        sim = Simulator(dut)
        sim.add_clock(1e-8)
        sim.add_process(b.clock)
        sim.add_process(watch)
        sim.add_testbench(b.driver)
        sim.add_testbench(b.monitor)
        sim.run()
        return b, flags

    b, flags = run([0, 9, 3])
    assert b.out == [c for i in (0, 9, 3) for c in codebook[i][:4]]
    assert not any(flags)
    b, flags = run([0, 10, 3, 1])
    assert flags[-1] == 1
    # The flag rises one cycle after the bad index transfers and stays.
    rise = flags.index(1)
    assert all(flags[rise:])


def test_lane_flush_drops_partial_codeword():
    """flush discards the rest of the current codeword; the next index starts cleanly."""
    rng = random.Random(11)
    codebook = random_codebook(rng, 8, 9)
    dut = DecoderLane(max_k=8, max_d=9, code_bits=CODE_BITS)
    got: list[int] = []

    async def tb(ctx):
        ctx.set(dut.d, 9)
        await write_codebook(ctx, dut, codebook)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 5)
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        # Take 4 codes of codeword 5, then flush the remaining 5.
        for _ in range(50):
            if len(got) == 4:
                break
            _c, _r, v, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if v:
                got.append(int(p))
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.flush, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 7)
        assert ctx.get(dut.i.ready) == 0  # no index is taken (and lost) while flushing
        await ctx.tick()
        ctx.set(dut.flush, 0)
        assert ctx.get(dut.o.valid) == 0
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, 2)
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        for _ in range(50):
            if len(got) == 13:
                break
            _c, _r, v, p = await ctx.tick().sample(dut.o.valid, dut.o.payload)
            if v:
                got.append(int(p))
        for _ in range(12):
            _c, _r, v = await ctx.tick().sample(dut.o.valid)
            assert not v

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(tb)
    sim.run()
    assert got == codebook[5][:4] + codebook[2][:9]


@pytest.mark.parametrize("d,per_code", [(1, False), (9, True), (4, False)])
def test_array_lockstep(d, per_code):
    """Three lanes in lockstep, one codebook written per code or per row, random stalls."""
    lanes, k, max_d = 3, 64, 9
    rng = random.Random(d * 7 + per_code)
    codebook = random_codebook(rng, k, max_d)
    rows = [[rng.randrange(k) for _ in range(lanes)] for _ in range(max(8, 120 // d))]
    dut = DecoderArray(lanes=lanes, max_k=k, max_d=max_d, code_bits=CODE_BITS)
    expect = dut.model(rows, codebook, d)
    assert expect[0] == [codebook[rows[0][j]][0] for j in range(lanes)]
    b = Bench(dut, codebook, k=k, d=d, items=rows, n_out=len(expect), gap=0.25, stall=0.25,
              seed=d, per_code=per_code, lanes=lanes).run()
    assert b.out == expect


def test_model_and_params():
    cb = [[1, 2, 3], [4, 5, 6]]
    assert decode_model([1, 0, 1], cb, 2) == [4, 5, 1, 2, 4, 5]
    with pytest.raises(IndexError, match="past the codebook"):
        decode_model([2], cb, 1)
    assert [index_bits(k) for k in (1, 2, 3, 256, 257, 2048)] == [1, 1, 2, 8, 9, 11]
    # Components built only for their model() or refused by the constructor are never
    # elaborated: keep Amaranth's UnusedElaboratable warning out of the log.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        lane = DecoderLane(max_k=2048, max_d=18, code_bits=6)
        assert lane.idx_bits == 11 and lane.latency == 2
        assert lane.model([0], [[70] * 18], 1) == [70 & 63]
        with pytest.raises(ValueError, match="max_k"):
            DecoderLane(max_k=100, max_d=9, code_bits=6)
        with pytest.raises(ValueError, match="max_d"):
            DecoderLane(max_k=256, max_d=0, code_bits=6)
        with pytest.raises(ValueError, match="lanes"):
            DecoderArray(lanes=0, max_k=256, max_d=9, code_bits=6)
        with pytest.raises(ValueError, match="d=10"):
            lane.model([0], [[0] * 9], 10)
        del lane
        gc.collect()
