"""Issue 21 item 6: a failed Verilator build names its cause from build.log (a tool missing
from PATH), not make's closing "Leaving directory" line."""

from __future__ import annotations

from shiftbook.sim.rtl.verilator_cache import log_tail


def test_missing_python_is_the_named_cause(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("make: Entering directory '/b'\n"
                   "/usr/bin/env: 'python3': No such file or directory\n"
                   "make: *** [Vtop.mk:50: Vtop__ver.d] Error 127\n"
                   "make: Leaving directory '/b'\n")
    assert log_tail(log) == "/usr/bin/env: 'python3': No such file or directory"
    assert "Leaving directory" not in log_tail(log, 3)


def test_compiler_error_and_plain_tail(tmp_path):
    log = tmp_path / "build.log"
    log.write_text("%Error: top.v:3:1: syntax error\nmake: Leaving directory '/b'\n")
    assert log_tail(log).startswith("%Error: top.v:3:1")
    log.write_text("step 1\nstep 2\n")
    assert log_tail(log) == "step 2"
    assert log_tail(tmp_path / "missing.log") == ""
