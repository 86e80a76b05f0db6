"""Energy per inference of ResNet-20 (32x32) compiled for a core preset: shiftbook vs int8
MAC vs fp32 as ratios, with the per-event table beside them; writes bench/out/energy.json.

    .venv/bin/python bench/bench_energy.py [--config small] [--energy-table YAML]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "bench_energy"
OUT = ROOT / "bench" / "out" / "energy.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--energy-table", default=None, metavar="YAML")
    ap.add_argument("-o", "--output", default=str(OUT))
    args = ap.parse_args(argv)

    from shiftbook.cli import main as cli
    from shiftbook.sw.estimate.report import build_record, summary_text

    bundle = BUILD / f"resnet20_{args.config}"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli(["compile", "resnet20", "--config", args.config, "-o", str(bundle)])
    if rc:
        print(f"compile failed (exit {rc})", file=sys.stderr)
        return rc
    rec, comparison = build_record(bundle, args.energy_table)
    e = rec["energy"]
    left = comparison.split("\n\n", 1)
    cmp_lines = left[0].splitlines()
    tab_lines = left[1].splitlines() if len(left) > 1 else []
    wl = max(len(s) for s in cmp_lines)
    print(f"ResNet-20 (32x32), config {rec['config']}: energy per inference")
    for i in range(max(len(cmp_lines), len(tab_lines))):
        a = cmp_lines[i] if i < len(cmp_lines) else ""
        b = tab_lines[i] if i < len(tab_lines) else ""
        print(f"{a:{wl}s}   | {b}")
    print()
    print(summary_text(rec))
    res = {"network": "resnet20", "input": [3, 32, 32], "config": rec["config"],
           "config_hash": rec["config_hash"], "unit": "pJ",
           "energy_per_inference": e["totals"], "ratios_vs_shiftbook": e["ratios_vs_shiftbook"],
           "breakdown": e["breakdown"], "table_source": e["table_source"],
           "table": rec_table(args.energy_table),
           "cycles": {k: rec["cycles"][k] for k in ("total", "ideal", "utilization")},
           "layers": e["layers"]}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def rec_table(override: str | None) -> dict:
    from shiftbook.sw.estimate.energy import load_table

    return json.loads(json.dumps(load_table(override).data, default=str))


if __name__ == "__main__":
    sys.exit(main())
