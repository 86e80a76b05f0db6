"""Pixel walker (hw/compute_walk.py) against its model on random walks."""

import dataclasses
import random

import pytest

from shiftbook.config import PRESETS
from shiftbook.hw.compute_walk import WALK_REGS, PixelWalker

from .helpers import run_sim

START = ("ox0", "iy0", "ix0", "ab0", "oo0")


def _rand_port(rng, port, *, small: int | None = None):
    """A random value for ``port`` (its full range, or ``[-small, small]`` clipped to it)."""
    shape = port.shape()
    lo = -(1 << (shape.width - 1)) if shape.signed else 0
    hi = (1 << (shape.width - 1)) - 1 if shape.signed else (1 << shape.width) - 1
    if small is not None:
        return rng.randint(max(lo, -small), min(hi, small))
    return rng.randint(lo, hi)


def _walk_case(rng, dut):
    """Start and layer registers: mostly realistic (small strides, the walk crossing output
    rows), some fully random (every wrap-around of the widths)."""
    wild = rng.random() < 0.3
    small = None if wild else 40
    case = {n: _rand_port(rng, getattr(dut, n), small=small) for n in START + WALK_REGS}
    if not wild:
        case["out_w"] = rng.randint(1, 6)
        case["ox0"] = rng.randint(0, case["out_w"] - 1)
        case["stride_x"] = rng.randint(1, 3)
        case["stride_y"] = rng.randint(1, 3)
        case["pad_l"] = rng.randint(0, 2)
    return case


@pytest.mark.parametrize("rows", [2, 3, 4, 5])
def test_walker_matches_model(rows):
    cfg = dataclasses.replace(PRESETS["tiny"], rows=rows)
    dut = PixelWalker(cfg)
    assert dut.steps == (rows + 1) // 2
    rng = random.Random(rows)
    cases = [_walk_case(rng, dut) for _ in range(60)]
    got = []

    async def tb(ctx):
        for case in cases:
            for n, v in case.items():
                ctx.set(getattr(dut, n), v)
            ctx.set(dut.load, 1)
            await ctx.tick()
            ctx.set(dut.load, 0)
            # steps with random idle cycles in between (the chain holds while step is low)
            done = 0
            while done < dut.steps:
                go = rng.random() < 0.7
                ctx.set(dut.step, int(go))
                await ctx.tick()
                done += go
            ctx.set(dut.step, 0)
            for n in START:           # the start inputs may change once loaded
                ctx.set(getattr(dut, n), _rand_port(rng, getattr(dut, n)))
            await ctx.tick()
            got.append([(ctx.get(dut.iy[r]), ctx.get(dut.ix[r]), ctx.get(dut.ab[r]),
                         ctx.get(dut.oo[r])) for r in range(rows)])

    run_sim(dut, tb)
    for case, rows_got in zip(cases, got, strict=True):
        assert rows_got == dut.model(**case), case

