"""`make demo`: the main job on the built-in default example.

A seeded random 3x3 convolution (16 -> 32 channels on 14x14) with shift-coded weights is
compiled for the `small` core (4x8 PEs) and run at every verification level (golden,
functional, RTL under Verilator); each is compared element by element with the golden
reference. Then the core's Verilog is written to out/demo/verilog/.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

OUT = Path("out/demo")


def main() -> int:
    from shiftbook.cli import main as cli
    from shiftbook.commands.layer import run_layer
    from shiftbook.config import load_config

    cfg_name = "small"
    base = dict(op="conv", cin=16, cout=32, kernel=3, stride=1, padding=None, size=14,
                seed=0, config=cfg_name, weights_dist="normal", input_dist="normal",
                no_relu=False, residual=False, json=False, output=None)
    print(f"shiftbook demo: random 3x3 conv 16->32 on 14x14, core '{cfg_name}' "
          f"({load_config(cfg_name).rows}x{load_config(cfg_name).cols} PEs)\n")
    print(f"{'level':<11} {'bit-exact':<10} {'mismatches':>10} {'cycles':>8} {'ideal':>8} "
          f"{'ratio':>6} {'wall s':>7}")
    ok = True
    for level in ("golden", "functional", "rtl"):
        t0 = time.time()
        if level == "rtl":
            print("  (building the core with Verilator once per config; cached under build/)",
                  flush=True)
        rec = run_layer(argparse.Namespace(level=level, **base))
        ok &= rec["bit_exact"]
        src = "" if level == "rtl" else " (est.)"
        print(f"{level:<11} {str(rec['bit_exact']):<10} {rec['mismatches']:>10} "
              f"{rec['cycles']:>8} {rec['ideal_cycles']:>8} {rec['cycles_per_ideal']:>6}"
              f" {time.time() - t0:>7.1f}{src}", flush=True)
        if rec["first_mismatch"]:
            print(f"  first mismatch: {rec['first_mismatch']}")
    vdir = OUT / "verilog"
    print()
    if cli(["verilog", "--config", cfg_name, "-o", str(vdir)]) != 0:
        return 1
    print("result: bit-exact at every level" if ok else "result: MISMATCH (see above)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
