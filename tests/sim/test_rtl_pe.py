"""The generated PE Verilog (hw/pe.py through Amaranth's Verilog back end) under Verilator,
stepped at random against ``pe_model`` (checks in tests/rtl/cocotb_pe.py): the unit-level
L2 check of one gateware block with the shared cached-build machinery."""

from __future__ import annotations

from pathlib import Path

import pytest

from shiftbook.sim.rtl import runner
from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

pytestmark = pytest.mark.rtl

RTL_TESTS = Path(__file__).resolve().parents[1] / "rtl"


@pytest.mark.parametrize(("kind", "acc_bits", "exp_bits"), [
    ("shift", 16, 3),   # narrow accumulator: sums wrap
    pytest.param("shift", 32, 4, marks=pytest.mark.slow),
    pytest.param("mult", 24, 4, marks=pytest.mark.slow),
])
def test_pe_verilog_matches_model(tmp_path, kind, acc_bits, exp_bits):
    try:
        setup_verilator_env()
        from amaranth.back import verilog

        from shiftbook.hw.pe import make_pe
    except (ToolchainError, ImportError) as e:
        pytest.skip(str(e))
    pe = make_pe(kind, acc_bits=acc_bits, exp_bits=exp_bits)
    text = verilog.convert(pe, name="shiftbook_pe", emit_src=False)
    bdir = runner.build_model("shiftbook_pe", {"shiftbook_pe.v": text},
                              label=f"{kind} PE acc={acc_bits} exp={exp_bits}")
    env = {"PE_ACC_BITS": str(acc_bits), "PE_EXP_BITS": str(exp_bits), "PE_KIND": kind,
           "PE_STEPS": "2000", "PE_SEED": str(acc_bits + exp_bits)}
    assert runner.run_cocotb(bdir, "shiftbook_pe", "cocotb_pe", test_dir=tmp_path, env=env,
                             log_file=tmp_path / "sim.log", pythonpath=[RTL_TESTS]) == (1, 0)
