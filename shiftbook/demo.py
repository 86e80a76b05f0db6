"""`make demo`: the main job on the built-in default example.

1. One seeded random 3x3 convolution (16 -> 32 channels on 14x14, shift-coded weights) at every
   verification level (golden, functional, RTL under Verilator), each compared element by
   element with the golden reference.
2. The default network, a ResNet-8 (32x32 input, seeded random weights converted to shift
   codes, calibrated power-of-two scales), compiled for the `small` core (4x8 PEs) and run at
   the functional and RTL levels; every layer's tensor is compared with golden and per-layer
   cycles are printed.
3. The cycle model's per-layer estimate of the same bundle, an HTML report with energy per
   inference against int8 MAC and fp32 designs (out/demo/report/), the core's Verilog, and the
   Verilog + constraints for the default board (ULX3S-85F).

Outputs go to out/demo/.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

OUT = Path("out/demo")
CONFIG = "small"


def _banner(text: str) -> None:
    print(f"\n== {text}", flush=True)


def _layer_demo() -> bool:
    from shiftbook import flow

    base = dict(op="conv", cin=16, cout=32, kernel=3, stride=1, size=14, seed=0,
                config=CONFIG)
    print(f"{'level':<11} {'bit-exact':<10} {'mismatches':>10} {'cycles':>8} {'ideal':>8} "
          f"{'ratio':>6} {'wall s':>7}")
    ok = True
    for level in ("golden", "functional", "rtl"):
        t0 = time.time()
        rec = flow.layer(level=level, **base)
        ok &= rec["bit_exact"]
        src = "" if level == "rtl" else " (cycles: estimate)"
        print(f"{level:<11} {str(rec['bit_exact']):<10} {rec['mismatches']:>10} "
              f"{rec['cycles']:>8} {rec['ideal_cycles']:>8} {rec['cycles_per_ideal']:>6}"
              f" {time.time() - t0:>7.1f}{src}", flush=True)
        if rec["first_mismatch"]:
            print(f"  first mismatch: {rec['first_mismatch']}")
    return ok


def main() -> int:
    from shiftbook.cli import main as cli

    OUT.mkdir(parents=True, exist_ok=True)
    t_start = time.time()
    _banner(f"1/3 one layer: random 3x3 conv 16->32 on 14x14, core '{CONFIG}' "
            "(the first RTL run builds the core with Verilator; cached under build/)")
    ok = _layer_demo()

    bundle = OUT / "resnet8.bundle"
    _banner(f"2/3 ResNet-8 (32x32, seeded random weights) compiled for core '{CONFIG}'")
    if cli(["compile", "resnet8", "--config", CONFIG, "--calib", "8", "--seed", "0",
            "-o", str(bundle)]) != 0:
        return 1
    for level in ("functional", "rtl"):
        _banner(f"ResNet-8 at level {level}: every layer compared with golden")
        rc = cli(["simulate", str(bundle), "--level", level])
        ok &= rc == 0

    _banner("3/3 estimates and Verilog")
    if cli(["estimate", str(bundle)]) != 0:
        return 1
    if cli(["report", str(bundle), "-o", str(OUT / "report")]) != 0:
        return 1
    if cli(["verilog", "--config", CONFIG, "-o", str(OUT / "verilog")]) != 0:
        return 1
    if cli(["verilog", "--board", "ulx3s-85f", "-o", str(OUT / "ulx3s-85f")]) != 0:
        return 1
    print(f"\ndemo finished in {time.time() - t_start:.0f} s; "
          + ("result: bit-exact at every level and every layer" if ok else
             "result: MISMATCH (see above)"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
