"""RTL cycles / ideal cycles (MACs / PEs) for one layer, side by side with the functional
simulator's estimate.

Default: the issue's reference layer, a 64->64 3x3 conv on 14x14 with the 16x16 `base` array
(target: RTL/ideal <= 1.25). Writes bench/out/layer_cycles.json.

    .venv/bin/python bench/bench_layer_cycles.py [--config base] [--cin 64 --cout 64 ...]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from shiftbook import flow

CASES = [
    # (name, op, cin, cout, kernel, stride, size)
    ("conv3x3 64->64 14x14", "conv", 64, 64, 3, 1, 14),
    ("conv3x3 32->32 28x28", "conv", 32, 32, 3, 1, 28),
    ("conv1x1 64->128 s2 14x14", "conv", 64, 128, 1, 2, 14),
    ("conv3x3 3->16 32x32", "conv", 3, 16, 3, 1, 32),
]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="base")
    ap.add_argument("--quick", action="store_true", help="only the reference layer")
    args = ap.parse_args()
    rows = []
    print(f"config {args.config}")
    print(f"{'layer':<26} {'ideal':>8} {'func est':>9} {'RTL':>8} {'RTL/ideal':>9} "
          f"{'RTL/est':>8} {'exact':>6} {'wall s':>7}")
    for name, op, cin, cout, k, s, size in CASES[:1] if args.quick else CASES:
        common = dict(op=op, cin=cin, cout=cout, kernel=k, stride=s, size=size, seed=0,
                      config=args.config)
        est = flow.layer(level="functional", **common)
        t0 = time.time()
        rtl = flow.layer(level="rtl", **common)
        wall = time.time() - t0
        r = {"layer": name, "ideal": rtl["ideal_cycles"], "estimate": est["cycles"],
             "rtl": rtl["cycles"], "rtl_per_ideal": rtl["cycles"] / rtl["ideal_cycles"],
             "rtl_per_estimate": rtl["cycles"] / est["cycles"], "bit_exact": rtl["bit_exact"],
             "wall_s": wall}
        rows.append(r)
        print(f"{name:<26} {r['ideal']:>8} {r['estimate']:>9} {r['rtl']:>8} "
              f"{r['rtl_per_ideal']:>9.3f} {r['rtl_per_estimate']:>8.3f} "
              f"{str(r['bit_exact']):>6} {wall:>7.1f}", flush=True)
    ref = rows[0]
    target = 1.25
    print(f"\nreference layer RTL/ideal = {ref['rtl_per_ideal']:.3f} (target <= {target}): "
          f"{'met' if ref['rtl_per_ideal'] <= target else 'MISSED'}")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "layer_cycles.json").write_text(json.dumps(
        {"config": args.config, "target_rtl_per_ideal": target, "layers": rows}, indent=2))
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
