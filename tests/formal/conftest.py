"""Collects the proofs' run times: ``bench/out/formal_times.json`` and a terminal summary."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

_TIMES: dict[str, dict] = {}
_OUT = Path(__file__).resolve().parents[2] / "bench" / "out" / "formal_times.json"


@pytest.fixture
def formal_record():
    """``record(name, seconds, passed)`` for one SymbiYosys run."""
    def record(name: str, seconds: float, passed: bool) -> None:
        _TIMES[name] = {"seconds": round(seconds, 2), "passed": passed}
    return record


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not _TIMES:
        return
    total = sum(t["seconds"] for t in _TIMES.values())
    _OUT.parent.mkdir(parents=True, exist_ok=True)
    _OUT.write_text(json.dumps({"total_seconds": round(total, 2), "proofs": _TIMES},
                               indent=2) + "\n")
    terminalreporter.section("formal proofs (SymbiYosys)")
    for name, t in _TIMES.items():
        if name.endswith("_mutant"):   # a broken block: the proof must fail
            verdict = "MISSED (the proof passed a broken block)" if t["passed"] else "caught"
        else:
            verdict = "PASS" if t["passed"] else "FAIL"
        terminalreporter.write_line(f"{name:40s} {t['seconds']:7.2f} s  {verdict}")
    terminalreporter.write_line(f"{'total':40s} {total:7.2f} s  -> {_OUT}")
