"""sim/rtl/extmem.v on its own, under cocotb: exact read latency, in-order pipelined responses,
back-pressure from +stall_seed, the +image load, the `dump` write-back and the fault flag
(checks in tests/rtl/cocotb_extmem.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from shiftbook.sim.rtl import runner
from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

pytestmark = pytest.mark.rtl

RTL_TESTS = Path(__file__).resolve().parents[1] / "rtl"
EXTMEM = runner.HERE / "extmem.v"


@pytest.fixture(scope="session")
def toolchain():
    try:
        setup_verilator_env()
    except ToolchainError as e:
        pytest.skip(str(e))


@pytest.mark.parametrize(("bus", "latency", "stall_seed", "stall_pct"), [
    (4, 1, 0, 0),
    (4, 1, 777, 60),
    (8, 5, 0, 0),
    (8, 5, 12345, 30),
])
def test_extmem(toolchain, tmp_path, bus, latency, stall_seed, stall_pct):
    assert _run_extmem(tmp_path, bus, latency, stall_seed, stall_pct) == (1, 0)


def test_checker_catches_wrong_latency(toolchain, tmp_path):
    # the same model and traffic, but the checker told the latency is 2: it must fail
    with pytest.raises(runner.RtlRunError, match="rsp_valid=1, expected 0"):
        _run_extmem(tmp_path, 4, 1, 0, 0, claim_latency=2)


def _run_extmem(tmp_path, bus, latency, stall_seed, stall_pct, claim_latency=None):
    words = 64
    bdir = runner.build_model("shiftbook_extmem", {"extmem.v": EXTMEM},
                              parameters={"BUS_BYTES": bus, "LATENCY": latency,
                                          "WORDS": words},
                              label=f"extmem B={bus} L={latency}")
    rng = random.Random(bus * 100 + latency)
    image_words = 40
    image = tmp_path / "image.hex"
    image.write_text("".join(f"{rng.getrandbits(8 * bus):0{2 * bus}x}\n"
                             for _ in range(image_words)))
    dump = tmp_path / "dump.hex"
    plusargs = [f"+image={image}", f"+image_words={image_words}", f"+dump_file={dump}"]
    if stall_seed:
        plusargs += [f"+stall_seed={stall_seed}", f"+stall_pct={stall_pct}"]
    env = {"EXTMEM_BUS_BYTES": str(bus), "EXTMEM_LATENCY": str(claim_latency or latency),
           "EXTMEM_WORDS": str(words), "EXTMEM_STALL": str(int(bool(stall_seed))),
           "EXTMEM_STALL_PCT": str(stall_pct), "EXTMEM_IMAGE_WORDS": str(image_words),
           "EXTMEM_CYCLES": "400", "EXTMEM_SEED": str(latency), "EXTMEM_IMAGE": str(image),
           "EXTMEM_DUMP": str(dump)}
    return runner.run_cocotb(bdir, "shiftbook_extmem", "cocotb_extmem", test_dir=tmp_path,
                             plusargs=plusargs, env=env, log_file=tmp_path / "sim.log",
                             pythonpath=[RTL_TESTS])
