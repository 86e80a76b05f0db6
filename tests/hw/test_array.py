"""PE array: per-row activations, per-column codes, drain chain."""

import random

from shiftbook.hw.array import PEArray
from shiftbook.hw.pe import pe_model
from shiftbook.isa import Mode

from .helpers import run_sim


def test_array_random_steps_and_drain():
    R, C, AB, EB = 3, 2, 24, 3
    dut = PEArray(rows=R, cols=C, acc_bits=AB, exp_bits=EB)
    rng = random.Random(2)
    steps = []
    for t in range(60):
        steps.append(dict(
            x=[rng.randrange(-128, 128) for _ in range(R)],
            valid=[rng.random() < 0.8 for _ in range(R)],
            code=[rng.randrange(1 << (EB + 2)) for _ in range(C)],
            mode=Mode.MAC if t < 40 else rng.choice([Mode.MAX, Mode.SUM]),
            first=t in (0, 40), load=t in (39, 59)))
    acc = [[0] * C for _ in range(R)]
    loads = []
    for s in steps:
        for r in range(R):
            for c in range(C):
                acc[r][c] = pe_model(acc[r][c], s["x"][r], s["code"][c], valid=s["valid"][r],
                                     mode=s["mode"], first=s["first"], acc_bits=AB,
                                     exp_bits=EB)
        if s["load"]:
            loads.append([row[:] for row in acc])

    async def tb(ctx):
        got = []
        for i, s in enumerate(steps):
            ctx.set(dut.en, 1)
            ctx.set(dut.mode, s["mode"])
            ctx.set(dut.first, s["first"])
            ctx.set(dut.load, s["load"])
            for r in range(R):
                ctx.set(dut.x[r], s["x"][r])
                ctx.set(dut.valid[r], s["valid"][r])
            for c in range(C):
                ctx.set(dut.code[c], s["code"][c])
            await ctx.tick()
            if i == 41:
                # tile 0 reached the drain registers at the end of step 39 + latency
                ctx.set(dut.en, 0)
                for _ in range(R):
                    got.append([ctx.get(dut.drain[c]) for c in range(C)])
                    ctx.set(dut.shift, 1)
                    await ctx.tick()
                ctx.set(dut.shift, 0)
                assert got == loads[0], (got, loads[0])
        ctx.set(dut.en, 0)
        ctx.set(dut.load, 0)
        await ctx.tick()
        await ctx.tick()
        got = []
        for _ in range(R):
            got.append([ctx.get(dut.drain[c]) for c in range(C)])
            ctx.set(dut.shift, 1)
            await ctx.tick()
        assert got == loads[1]

    run_sim(dut, tb)
