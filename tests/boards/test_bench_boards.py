"""bench/bench_boards.py's verdict and table on hand-made results (no builds)."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import bench_boards as bench  # noqa: E402


def _ok(board: str, fmax: float, clk: float, **res: tuple[int, int]) -> dict:
    return {"board": board, "ok": True, "config": board, "fmax_mhz": fmax, "clk_mhz": clk,
            "timing_met": fmax >= clk, "bitstream_bytes": 123456, "seconds": 61.2,
            "resources": {k: {"used": u, "available": a} for k, (u, a) in res.items()}}


def test_verdict() -> None:
    ulx = _ok("ulx3s-85f", 40.0, 25.0, lut=(20000, 83640))
    ice = _ok("icebreaker", 11.0, 12.0, lut=(5000, 5280))
    assert bench.verdict([ulx, ice]) is None            # an iCEBreaker miss only warns
    slow = _ok("ulx3s-85f", 21.3, 25.0)
    assert bench.verdict([slow, ice]) == \
        "ulx3s-85f: Fmax 21.30 MHz misses the 25.00 MHz clock"
    bad = {"board": "icebreaker", "ok": False, "seconds": 22.0,
           "error": "DoesNotFitError: design does not fit icebreaker: it needs 6212 logic "
                    "cells, the device has 5280"}
    assert bench.verdict([ulx, bad]) == ("icebreaker: DoesNotFitError: design does not fit "
                                         "icebreaker: it needs 6212 logic cells, the device "
                                         "has 5280")


def test_table() -> None:
    ulx = _ok("ulx3s-85f", 40.5, 25.0, lut=(20000, 83640), ff=(6000, 83640), bram=(136, 208),
              dsp=(0, 156))
    bad = {"board": "icebreaker", "ok": False, "seconds": 22.0, "error": "x"}
    lines = bench.table([ulx, bad]).splitlines()
    assert lines[0].split() == ["board", "config", "array", "LUT", "FF", "BRAM", "DSP",
                                "SPRAM", "Fmax/clk", "MHz", "timing", "bitstream", "B",
                                "build", "s"]
    assert lines[2].split() == ["ulx3s-85f", "ulx3s-85f", "4x8", "20000/83640", "6000/83640",
                                "136/208", "0/156", "-", "40.50/25.00", "met", "123456", "61"]
    assert lines[3].split()[:3] == ["icebreaker", "-", "1x1"]
