"""Fixtures shared by the RTL tests in this folder."""

from __future__ import annotations

import pytest

from shiftbook.config import PRESETS
from shiftbook.sim.rtl import runner
from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env


@pytest.fixture(scope="session")
def tiny_core():
    """The generated core for the 'tiny' preset, built once per session (cached on disk)."""
    try:
        setup_verilator_env()
        from shiftbook.hw.verilog import generate_verilog  # noqa: F401
    except (ToolchainError, ImportError) as e:
        pytest.skip(str(e))
    return runner.build(PRESETS["tiny"])
