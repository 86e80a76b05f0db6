"""Requantization lane against sw/numerics.requantize."""

import random

from shiftbook.hw.requant import RequantLane

from .helpers import run_sim


def _cases(acc_bits, n, seed):
    rng = random.Random(seed)
    lo, hi = -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1
    out = []
    for i in range(n):
        big = rng.random() < 0.3
        acc = rng.randint(lo, hi) if big else rng.randint(-5000, 5000)
        bias = rng.randint(-(1 << 20), 1 << 20) if i % 3 else rng.randint(-(1 << 31),
                                                                           (1 << 31) - 1)
        shift = rng.choice([0, 1, 2, 7, rng.randint(0, acc_bits), acc_bits])
        relu = rng.random() < 0.5
        residual = rng.random() < 0.5
        res = rng.randint(-128, 127)
        res_shift = rng.randint(-12, min(12, acc_bits - 8)) if rng.random() < 0.9 else \
            rng.choice([-128, -9, -8, acc_bits - 8])
        out.append((acc, bias, shift, relu, residual, res, res_shift))
    # exact ties of the round-half-up
    for s in range(1, 6):
        for v in range(-40, 40):
            out.append((v, 0, s, False, False, 0, 0))
    # residual right-shift ties
    for r in range(-128, 128):
        out.append((0, 0, 0, False, True, r, -rng.randint(1, 9)))
    return out


def _run(acc_bits, cases):
    dut = RequantLane(acc_bits=acc_bits)

    async def tb(ctx):
        got = []
        for i in range(len(cases) + dut.latency):
            if i < len(cases):
                acc, bias, shift, relu, residual, res, res_shift = cases[i]
                ctx.set(dut.i_valid, 1)
                ctx.set(dut.acc, acc)
                ctx.set(dut.bias, bias)
                ctx.set(dut.shift, shift)
                ctx.set(dut.relu, relu)
                ctx.set(dut.residual, residual)
                ctx.set(dut.res, res)
                ctx.set(dut.res_shift, res_shift)
            else:
                ctx.set(dut.i_valid, 0)
            _, _, ov, out = await ctx.tick().sample(dut.o_valid, dut.out)
            if ov:
                got.append(out)
        assert len(got) == len(cases)
        for c, g in zip(cases, got, strict=True):
            acc, bias, shift, relu, residual, res, res_shift = c
            want = dut.model(acc, bias, shift, relu=relu,
                             residual=res if residual else None, res_shift=res_shift)
            assert g == want, c

    run_sim(dut, tb)


def test_requant_random_acc32():
    _run(32, _cases(32, 3000, 1))


def test_requant_random_acc20():
    _run(20, _cases(20, 1500, 2))


def test_requant_exhaustive_small_values():
    # every int8-range accumulator value with every shift 0..10, relu on/off
    cases = [(a, b, s, relu, False, 0, 0) for a in range(-300, 300, 3) for b in (0, -7)
             for s in range(11) for relu in (False, True)]
    _run(16, cases)
