"""`shiftbook estimate BUNDLE [--validate] [--json]`: per-layer cycles from the cycle model;
with --validate, the same bundle in RTL and the model's error on every layer."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

# The record and its error live in the library (sw/estimate/record.py); re-exported here.
from shiftbook.commands.progress import Stage
from shiftbook.sw.estimate.record import EstimateError

__all__ = ["EstimateError", "estimate_record", "add_arguments", "run"]

NAME = "estimate"
HELP = "per-layer cycle estimate of a bundle (no RTL); --validate compares with an RTL run"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="program bundle directory (or its manifest.json)")
    p.add_argument("--validate", action="store_true",
                   help="also run the bundle in RTL (Verilator) and print model vs measured "
                        "cycles and the error for every layer")
    p.add_argument("--stall-pct", type=int, default=0, metavar="P",
                   help="external memory refuses a request on P%% of cycles (0-99, default 0): "
                        "the model's expected-stall rate, and with --validate the RTL "
                        "memory's random stalls")
    p.add_argument("--stall-seed", type=int, default=1, metavar="S",
                   help="seed of the RTL memory's random stalls with --stall-pct "
                        "(1..2**32-1, default 1)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def estimate_record(bundle_path: str | Path, *, validate: bool = False, stall_pct: int = 0,
                    stall_seed: int = 1) -> dict[str, Any]:
    """Everything `shiftbook estimate` prints, as one JSON-able record
    (:func:`shiftbook.sw.estimate.record.estimate_record`); with ``validate`` the bundle is
    also run in RTL (Verilator) and compared layer by layer."""
    from shiftbook import flow

    return flow.estimate_record(bundle_path, validate=validate, stall_pct=stall_pct,
                                stall_seed=stall_seed)


def run(args: argparse.Namespace) -> int:
    what = (f"estimating {args.bundle} and running it in RTL (Verilator; the first run builds "
            f"the core)" if args.validate else f"estimating {args.bundle}")
    with Stage("estimate", what, enabled=not args.json):
        rec = estimate_record(args.bundle, validate=args.validate, stall_pct=args.stall_pct,
                              stall_seed=args.stall_seed)
    if args.json:
        out = {k: v for k, v in rec.items() if k != "model"}
        print(json.dumps(out, indent=2))
        return 0
    print(f"bundle {rec['bundle']}  config {rec['config']} ({rec['config_hash']})")
    for note in rec["approximate"]:
        print(f"note: approximate: {note}")
    if rec["stall_pct"]:
        rtl = f"; RTL memory: random stalls, seed {rec['stall_seed']}" if args.validate else ""
        print(f"memory stalls {rec['stall_pct']}% of cycles (model: expected value{rtl})")
    if args.validate:
        print(f"{'layer':24s} {'model':>10s} {'RTL':>10s} {'error %':>9s}")
        for lay in rec["layers"]:
            print(f"{lay['name']:24s} {lay['model']:10d} {lay['rtl']:10d} "
                  f"{lay['error_pct']:+9.3f}")
        t = rec["total"]
        print(f"{'total':24s} {t['model']:10d} {t['rtl']:10d} {t['error_pct']:+9.3f}")
        print(f"max |error| = {rec['max_abs_error_pct']:.3f} %")
    else:
        print(f"{'layer':24s} {'model cycles':>12s} {'ideal':>10s} {'util':>6s}")
        for lay in rec["layers"]:
            u = "" if lay["utilization"] is None else f"{lay['utilization']:.3f}"
            print(f"{lay['name']:24s} {lay['model']:12d} {lay['ideal'] or '':>10} {u:>6s}")
        print(f"{'total':24s} {rec['total']['model']:12d}")
        ideal = rec["ideal_cycles"]
        if ideal:
            print(f"ideal (MACs / PEs) {ideal}  ratio {rec['total']['model'] / ideal:.3f}")
    return 0
