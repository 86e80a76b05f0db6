"""The prediction half of bench/bench_max_array.py (no Yosys): fit and largest array."""

import dataclasses
import importlib.util
from pathlib import Path

import pytest

from shiftbook.config import CoreConfig

_PATH = Path(__file__).resolve().parents[2] / "bench" / "bench_max_array.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_max_array", _PATH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _points(bench, fixed, per_pe, rows=(1, 2, 3, 4), noise=(0, 0, 0, 0)):
    pts = []
    for r, n in zip(rows, noise, strict=True):
        pes = r * bench.COLS
        pts.append({"rows": r, "cols": bench.COLS, "resources": {
            k: fixed[k] + per_pe[k] * pes + (n if k == "lut4" else 0) for k in fixed}})
    return pts


def test_fit_recovers_a_linear_model_and_reports_residuals(bench):
    fixed = {"lut4": 20000, "ff": 6000, "bram": 180, "dsp": 0}
    per_pe = {"lut4": 250, "ff": 74, "bram": 0, "dsp": 1}
    model = bench.fit(_points(bench, fixed, per_pe))
    for k in fixed:
        assert model[k]["fixed"] == pytest.approx(fixed[k], abs=1e-6)
        assert model[k]["per_pe"] == pytest.approx(per_pe[k], abs=1e-9)
        assert model[k]["max_abs_residual"] == pytest.approx(0, abs=1e-6)
    noisy = bench.fit(_points(bench, fixed, per_pe, noise=(10, -10, -10, 10)))
    assert noisy["lut4"]["max_abs_residual"] == pytest.approx(10)


def test_largest_rows_per_resource(bench):
    base = dataclasses.replace(CoreConfig(), **bench.LEAN)
    fixed = {"lut4": 20000, "ff": 6000, "bram": 180, "dsp": 0}
    # mult-like: 1 DSP per PE -> floor(156 / 16) = 9 rows; LUT4 allows more
    model = bench.fit(_points(bench, fixed, {"lut4": 170, "ff": 74, "bram": 0, "dsp": 1}))
    rows = bench.rows_by_resource(model, base, "mult")
    assert rows["dsp"] == 156 // bench.COLS
    assert rows["lut4"] > rows["dsp"]
    # shift-like: LUT4-bound, exactly the last row under the usable LUT4s
    model = bench.fit(_points(bench, fixed, {"lut4": 250, "ff": 74, "bram": 0, "dsp": 0}))
    rows = bench.rows_by_resource(model, base, "shift")
    usable = bench.limits()["lut4"]
    r = rows["lut4"]
    assert 20000 + 250 * 16 * r <= usable < 20000 + 250 * 16 * (r + 1)
    assert rows["dsp"] == 64    # no DSPs: only CoreConfig's 64-row limit


def test_table_shows_prediction_routed_shape_and_failed_attempts(bench):
    fit = {"lut4": {"per_pe": 168.4}}
    routed = {"rows": 8, "cols": 16, "fmax_mhz": 31.2, "timing_met": True,
              "resources": {"lut": {"used": 45000, "available": 83640}, "ff": {"used": 15000},
                            "bram": {"used": 143}, "dsp": {"used": 128}}}
    failed = {"rows": 9, "cols": 16, "fits": False, "error": "did not finish in 4800 s"}
    record = {"kinds": {"mult": {
        "fit": fit, "max": {"rows": 9, "cols": 16, "binding": "MULT18X18D",
                            "predicted": {"lut4": 1, "ff": 1, "bram": 1, "dsp": 144}},
        "pnr": {"confirmed": routed, "attempts": [failed, routed]}}}}
    lines = bench.table(record).splitlines()
    assert lines[1].split()[:4] == ["mult", "9x16", "8x16", "128"]
    assert "45000/83640" in lines[1] and "met" in lines[1]
    assert lines[2].strip() == "mult 9x16: did not finish in 4800 s"
    assert len(lines) == 3
