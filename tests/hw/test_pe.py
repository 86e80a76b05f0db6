"""Shift and multiplier PEs against their bit-exact model."""

import random

import pytest

from shiftbook import numerics
from shiftbook.hw.pe import MultPE, ShiftPE, pe_model
from shiftbook.isa import Mode

from .helpers import run_sim


def _check_steps(dut, steps):
    async def tb(ctx):
        acc = ctx.get(dut.acc)
        for (x, code, valid, mode, first) in steps:
            ctx.set(dut.en, 1)
            ctx.set(dut.x, x)
            ctx.set(dut.code, code)
            ctx.set(dut.valid, valid)
            ctx.set(dut.mode, mode)
            ctx.set(dut.first, first)
            await ctx.tick()
            want = dut.model(acc, x, code, valid=valid, mode=mode, first=first)
            got = ctx.get(dut.acc)
            assert got == want, (x, code, valid, mode, first, acc)
            acc = got
    run_sim(dut, tb)


def test_shift_pe_exhaustive_small():
    dut = ShiftPE(acc_bits=16, exp_bits=2)
    rng = random.Random(1)
    steps = []
    for x in range(-128, 128):
        for code in range(16):
            steps.append((x, code, 1, Mode.MAC, rng.random() < 0.1))
    for x in range(-128, 128):
        for mode in (Mode.MAX, Mode.SUM):
            for valid in (0, 1):
                steps.append((x, rng.randrange(16), valid, mode, rng.random() < 0.2))
    steps += [(rng.randrange(-128, 128), rng.randrange(16), 0, Mode.MAC, 0) for _ in range(50)]
    rng.shuffle(steps)
    steps.insert(0, (0, 0, 0, Mode.MAX, 1))
    _check_steps(dut, steps)


def test_shift_pe_model_matches_numerics():
    # the model's MAC addend is numerics.shift_product (no re-implemented rounding)
    for code in range(64):
        for x in (-128, -3, 0, 5, 127):
            got = pe_model(0, x, code, valid=True, mode=Mode.MAC, first=True, acc_bits=32,
                           exp_bits=4)
            assert got == numerics.shift_product(x, code, 4)
    assert pe_model(7, 3, 0, valid=True, mode=Mode.MAX, first=True, acc_bits=16,
                    exp_bits=2) == 3
    assert pe_model(7, 3, 0, valid=False, mode=Mode.MAX, first=True, acc_bits=16,
                    exp_bits=2) == -(1 << 15)


@pytest.mark.parametrize("exp_bits", [4, 5])
def test_shift_pe_random_real_widths(exp_bits):
    dut = ShiftPE(acc_bits=40, exp_bits=exp_bits)
    rng = random.Random(exp_bits)
    steps = [(rng.randrange(-128, 128), rng.randrange(1 << (exp_bits + 2)), rng.random() < 0.9,
              rng.choice(list(Mode)), rng.random() < 0.05) for _ in range(1500)]
    steps.insert(0, (0, 0, 0, Mode.SUM, 1))
    _check_steps(dut, steps)


def test_mult_pe_exhaustive_weights():
    dut = MultPE(acc_bits=32, exp_bits=4)
    rng = random.Random(3)
    steps = [(rng.randrange(-128, 128), w & 0xFF, 1, Mode.MAC, rng.random() < 0.1)
             for w in range(-128, 128) for _ in range(8)]
    steps.insert(0, (0, 0, 0, Mode.SUM, 1))
    _check_steps(dut, steps)


def test_drain_register_load_and_shift():
    dut = ShiftPE(acc_bits=16, exp_bits=2)

    async def tb(ctx):
        ctx.set(dut.en, 1)
        ctx.set(dut.first, 1)
        ctx.set(dut.valid, 1)
        ctx.set(dut.mode, Mode.SUM)
        ctx.set(dut.x, 42)
        ctx.set(dut.load, 1)
        await ctx.tick()
        assert ctx.get(dut.drain) == 42
        ctx.set(dut.first, 0)
        ctx.set(dut.load, 0)
        ctx.set(dut.drain_in, -5)
        ctx.set(dut.shift, 1)
        await ctx.tick()
        assert ctx.get(dut.acc) == 84
        assert ctx.get(dut.drain) == -5

    run_sim(dut, tb)


def test_bad_parameters():
    with pytest.raises(ValueError, match="exp_bits"):
        ShiftPE(acc_bits=16, exp_bits=4)


@pytest.mark.parametrize("kind", ["shift", "mult"])
def test_pe_every_mode_value_matches_model(kind):
    # all four 2-bit mode values (3 is not in the ISA: it only clears on `first`), with
    # accumulators near both wrap points and x at the int8 extremes (the MAX comparator
    # looks at 8 bits plus an in-range check, so values just outside int8 matter)
    dut = (ShiftPE if kind == "shift" else MultPE)(acc_bits=24, exp_bits=4)
    rng = random.Random(11)
    xs = [-128, -127, -1, 0, 1, 126, 127]
    steps = [(0, 0, 1, Mode.SUM, 1)]
    for _ in range(1500):
        mode = rng.randrange(4)
        x = rng.choice(xs) if rng.random() < 0.5 else rng.randrange(-128, 128)
        steps.append((x, rng.randrange(256), rng.random() < 0.85, mode, rng.random() < 0.08))
    # walk the accumulator across the int8 range boundaries with SUM, checking MAX on the way
    for x in (127, 1, 1, -128, -128, -1, 127):
        steps.append((x, 0, 1, Mode.SUM, 0))
        steps.append((rng.choice(xs), 0, 1, Mode.MAX, 0))
    _check_steps(dut, steps)


def test_max_against_accumulators_outside_int8():
    # the MAX comparator's in-range check: acc = 128, -129, +-2**k, the most negative value
    dut = ShiftPE(acc_bits=32, exp_bits=4)
    steps = []
    for acc in (128, -129, 255, -256, 1 << 20, -(1 << 20), (1 << 31) - 1, -(1 << 31)):
        for x in (-128, -1, 0, 127):
            # build acc from 0 with MAC steps of +-(m << e), then MAX with x
            steps.append((0, 0, 1, Mode.SUM, 1))
            rest = acc
            while rest:
                mag = abs(rest)
                e = min(15, max(0, mag.bit_length() - 7))
                m = min(127, mag >> e)
                steps.append((m, e | (16 if rest < 0 else 0), 1, Mode.MAC, 0))
                rest -= m << e if rest > 0 else -(m << e)
            steps.append((x, 0, 1, Mode.MAX, 0))
    _check_steps(dut, steps)


def test_two_term_pe_exhaustive_small():
    """The comparison two-term PE (both codes' shift products in one step) against its
    model: every int8 x with every pair of 4-bit codes (exp_bits = 2), and MAX/SUM steps."""
    from shiftbook.hw.pe import TwoTermShiftPE

    dut = TwoTermShiftPE(acc_bits=16, exp_bits=2)
    rng = random.Random(2)
    steps = []
    for x in range(-128, 128, 3):
        for c1 in range(16):
            for c2 in range(16):
                steps.append((x, c1 | c2 << 8, 1, Mode.MAC, rng.random() < 0.1))
    for x in range(-128, 128):
        for mode in (Mode.MAX, Mode.SUM):
            steps.append((x, rng.randrange(1 << 12), rng.randrange(2), mode,
                          rng.random() < 0.2))
    rng.shuffle(steps)
    steps.insert(0, (0, 0, 0, Mode.MAX, 1))
    _check_steps(dut, steps)
    assert pe_model(0, -5, 3 | 7 << 8, valid=True, mode=Mode.MAC, first=True, acc_bits=16,
                    exp_bits=2, kind="two-term") == -5 * 8 + 5 * 8
