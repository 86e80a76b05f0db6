"""A bundle's cycle estimate as one JSON-able record: per-layer cycles from the cycle model
(``shiftbook.timing``), ideal cycles and PE-array utilization; optionally merged with an RTL
run's per-layer cycles and the model's error.

This is what `shiftbook estimate` prints and what the report (:mod:`.report`) is built from.
The RTL run itself lives in ``shiftbook.sim`` (which sw/ must not import): a caller that wants
the comparison passes the runner in as ``rtl_run``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["EstimateError", "estimate_record"]


class EstimateError(ValueError):
    """A bundle the cycle model cannot estimate."""


def estimate_record(bundle_path: str | Path, *, stall_pct: int = 0, stall_seed: int = 1,
                    rtl_run: Callable[..., Any] | None = None) -> dict[str, Any]:
    """Everything `shiftbook estimate` prints, as one JSON-able record. ``stall_pct``: the
    external memory's stall rate (model: expected value; RTL: seeded random stalls).

    ``rtl_run``: when given, the bundle is also run in RTL as ``rtl_run(config, memory,
    stall_seed=..., stall_pct=...)`` (e.g. ``shiftbook.sim.rtl.runner.run_image``), which
    returns an object with ``cycles`` and ``marks``; every layer then gets its RTL cycles and
    the model's error."""
    from shiftbook.sw.bundle import load_bundle
    from shiftbook.timing import compare_marks, estimate

    path = Path(bundle_path)
    if not path.exists():
        raise EstimateError(f"bundle {bundle_path} does not exist")
    if not 0 <= stall_pct < 100:
        raise EstimateError(f"--stall-pct {stall_pct} must be in [0, 99]")
    if stall_pct and not 0 < stall_seed < 1 << 32:
        raise EstimateError(f"--stall-seed {stall_seed} must be in [1, 2**32 - 1]")
    bdir = path.parent if path.is_file() else path
    bundle = load_bundle(bdir)
    est = estimate(bundle, stall=stall_pct / 100)
    cfg = bundle.config
    ideal = {lay.index: lay.ideal_cycles for lay in bundle.layers}

    def util(mark: int, cycles: int) -> float | None:
        """ideal cycles (MACs / PEs) over the layer's cycles: the PE array's utilization."""
        return round(ideal[mark] / cycles, 4) if mark in ideal and cycles else None

    rec: dict[str, Any] = {
        "bundle": str(bdir), "config": cfg.name, "config_hash": cfg.hash,
        "model": est.to_dict(),
        "layers": [{"mark": lay.mark, "name": lay.name, "model": lay.cycles,
                    "ideal": ideal.get(lay.mark), "utilization": util(lay.mark, lay.cycles)}
                   for lay in est.layers],
        "total": {"model": est.total},
        "ideal_cycles": int(bundle.ideal_cycles),
        "approximate": list(est.approximate),
        "stall_pct": stall_pct,
    }
    if rtl_run is not None:
        res = rtl_run(cfg, bundle.memory, stall_seed=stall_seed if stall_pct else None,
                      stall_pct=stall_pct)
        if stall_pct:
            rec["stall_seed"] = stall_seed
        cmp = compare_marks(est, int(res.cycles), list(res.marks))
        segs = cmp["segments"]
        rec["layers"] = [{**lay, "rtl": s["rtl"], "error_pct": round(s["error_pct"], 4)}
                         for lay, s in zip(rec["layers"], segs[:-1], strict=True)]
        tot = segs[-1]
        rec["total"] = {"model": tot["model"], "rtl": tot["rtl"],
                        "error_pct": round(tot["error_pct"], 4)}
        rec["max_abs_error_pct"] = round(cmp["max_abs_error_pct"], 4)
    return rec
