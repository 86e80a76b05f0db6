"""End-to-end L2: hand-assembled conv programs on the generated core (hw/verilog.py) under
Verilator, checked byte for byte against an independent numpy reference and against the
functional simulator (L1), with and without memory back-pressure."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from shiftbook.config import PRESETS
from shiftbook.sim.rtl import runner
from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rtl"))
from programs import conv_program  # noqa: E402

pytestmark = pytest.mark.rtl

TINY = PRESETS["tiny"]

CASES = {
    "3x3-pad1-relu": dict(cin=2, cout=2, h=5, w=5, k=3, pad=1),
    "3x3-stride2-one-col": dict(cin=3, cout=1, h=6, w=7, k=3, pad=1, stride=2, relu=False),
    "1x1": dict(cin=4, cout=2, h=3, w=9, k=1, pad=0),
}


@pytest.mark.parametrize("name", list(CASES))
def test_conv_matches_reference_and_functional(tiny_core, name):
    from shiftbook.sim import functional

    case = conv_program(TINY, seed=len(name), **CASES[name])
    res = runner.run_image(TINY, case.image, timeout_cycles=200_000)
    assert res.status == "done"
    assert res.memory == case.expected
    fun = functional.run_program(TINY, case.image)
    assert res.memory == fun.memory
    # the program's MARKs, in order, with increasing cycle stamps inside the run
    assert [m[0] for m in res.marks] == [1, 2, 3, 4]
    stamps = [m[1] for m in res.marks]
    assert stamps == sorted(stamps) and stamps[-1] <= res.core_cycles
    # every COMPUTE needs at least its reduction steps
    k, cin = CASES[name]["k"], CASES[name]["cin"]
    assert res.cycles >= case.computes * cin * k * k


def test_conv_with_back_pressure(tiny_core):
    case = conv_program(TINY, seed=11, **CASES["3x3-pad1-relu"])
    free = runner.run_image(TINY, case.image, timeout_cycles=200_000)
    stalled = runner.run_image(TINY, case.image, stall_seed=99, stall_pct=50,
                               timeout_cycles=200_000)
    assert free.memory == stalled.memory == case.expected
    assert stalled.cycles > free.cycles


def test_illegal_instruction_raises_error(tiny_core):
    from shiftbook.isa import Insn, Opcode, encode_program

    image = encode_program([Insn(Opcode.MARK, {"id": 12})]) + (0xF).to_bytes(16, "little")
    with pytest.raises(runner.RtlRunError, match="core raised error.*MARK 12"):
        runner.run_image(TINY, image, timeout_cycles=10_000)


@pytest.mark.slow
def test_base_conv_matches_functional():
    """The 16x16 'base' core (a ~10 minute Verilator build on a loaded 2-core machine)."""
    try:
        setup_verilator_env()
    except ToolchainError as e:
        pytest.skip(str(e))
    from shiftbook.sim import functional

    base = PRESETS["base"]
    case = conv_program(base, cin=8, cout=base.cols, h=12, w=12, k=3, pad=1, seed=3,
                        max_exp=7)
    res = runner.run_image(base, case.image, timeout_cycles=2_000_000)
    assert res.memory == case.expected
    assert res.memory == functional.run_program(base, case.image).memory
