"""ECP5 resources per PE: the shift PE against the int8 multiplier PE, side by side.

Each PE (``hw/pe.py``) is synthesised alone with YoWASP Yosys ``synth_ecp5``, once with DSP
inference (the multiplier goes into a MULT18X18D) and once with ``-nodsp`` (everything in
LUTs). LUT4s count carry cells as two LUT4s each (a CCU2C holds two). From the per-PE counts
the benchmark also estimates the largest array of each kind that fits the ULX3S-85F
(LFE5U-85F: 83640 LUT4s, 156 MULT18X18D), keeping a fixed share of LUTs for the rest of the
core; a placed-and-routed check of those arrays is `shiftbook build` territory.

Run: ``.venv/bin/python bench/bench_pe_resources.py [--acc-bits 32] [--exp-bits 4]``.
Writes bench/out/bench_pe_resources.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from amaranth.back import rtlil

from shiftbook.boards.build import _yosys_cells, find_tools
from shiftbook.hw.pe import make_pe

ECP5_85F = {"lut4": 83640, "ff": 83640, "dsp": 156}
# LUT4 share reserved for the non-array part of the core and board (controller, DMA, buffers'
# address logic, requantizer, UART link), and headroom to close timing.
RESERVED_LUT_SHARE = 0.4


def synth_pe(kind: str, *, acc_bits: int, exp_bits: int, dsp: bool, workdir: Path,
             yosys: str) -> dict[str, int]:
    pe = make_pe(kind, acc_bits=acc_bits, exp_bits=exp_bits)
    il = workdir / f"{kind}_{'dsp' if dsp else 'nodsp'}.il"
    il.write_text(rtlil.convert(pe, name="pe"))
    log = il.with_suffix(".log")
    opts = "" if dsp else " -nodsp"
    # YoWASP tools only see the working directory: run there with relative names.
    proc = subprocess.run([yosys, "-q", "-l", log.name, "-p",
                           f"read_rtlil {il.name}; synth_ecp5 -top pe{opts}; stat"],
                          capture_output=True, text=True, cwd=workdir)
    if proc.returncode or not log.exists():
        raise RuntimeError(f"yosys failed on the {kind} PE: {proc.stderr.strip()[-400:]}")
    cells = _yosys_cells(log)
    if not cells:
        raise RuntimeError(f"yosys wrote no statistics for the {kind} PE ({log})")
    ffs = sum(n for c, n in cells.items() if c.startswith(("TRELLIS_FF", "FD1")))
    return {"lut4": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
            "lut4_plain": cells.get("LUT4", 0), "ccu2c": cells.get("CCU2C", 0),
            "ff": ffs, "dsp": cells.get("MULT18X18D", 0),
            "other": {c: n for c, n in cells.items()
                      if c not in ("LUT4", "CCU2C", "MULT18X18D") and not c.startswith(
                          ("TRELLIS_FF", "$scopeinfo"))}}


def largest_array(per_pe: dict[str, int]) -> dict[str, int | str]:
    lut_budget = int(ECP5_85F["lut4"] * (1 - RESERVED_LUT_SHARE))
    by_lut = lut_budget // max(per_pe["lut4"], 1)
    by_dsp = ECP5_85F["dsp"] // per_pe["dsp"] if per_pe["dsp"] else None
    n = min(by_lut, by_dsp) if by_dsp is not None else by_lut
    return {"pes": n, "bound": "DSP" if by_dsp is not None and by_dsp <= by_lut else "LUT",
            "by_lut": by_lut, "by_dsp": by_dsp if by_dsp is not None else -1}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acc-bits", type=int, default=32)
    ap.add_argument("--exp-bits", type=int, default=4)
    ap.add_argument("-o", "--output", default=str(Path(__file__).parent / "out"))
    args = ap.parse_args(argv)
    yosys = find_tools("ecp5")["YOSYS"]
    t0 = time.monotonic()
    res: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("shift", "mult"):
            for dsp in (True, False):
                key = f"{kind}_{'dsp' if dsp else 'nodsp'}"
                res[key] = synth_pe(kind, acc_bits=args.acc_bits, exp_bits=args.exp_bits,
                                    dsp=dsp, workdir=Path(tmp), yosys=yosys)
    arrays = {"shift": largest_array(res["shift_dsp"]), "mult": largest_array(res["mult_dsp"]),
              "mult_nodsp": largest_array(res["mult_nodsp"])}
    ratios = {
        "lut4_mult_nodsp_over_shift": res["mult_nodsp"]["lut4"] / res["shift_dsp"]["lut4"],
        "lut4_mult_dsp_over_shift": res["mult_dsp"]["lut4"] / res["shift_dsp"]["lut4"],
        "ff_mult_over_shift": res["mult_nodsp"]["ff"] / max(res["shift_dsp"]["ff"], 1),
        "largest_array_shift_over_mult": arrays["shift"]["pes"] / max(arrays["mult"]["pes"], 1),
    }
    print(f"ECP5 resources per PE (acc_bits={args.acc_bits}, exp_bits={args.exp_bits}; "
          f"LUT4 = LUT4 + 2 x CCU2C)")
    print(f"  {'':22s}{'LUT4':>8s}{'FF':>8s}{'DSP':>6s}")
    for key, label in (("shift_dsp", "shift PE"), ("mult_dsp", "mult PE (DSP)"),
                       ("mult_nodsp", "mult PE (-nodsp)"), ("shift_nodsp", "shift PE (-nodsp)")):
        r = res[key]
        print(f"  {label:22s}{r['lut4']:8d}{r['ff']:8d}{r['dsp']:6d}")
    print(f"  LUT4 ratio mult(-nodsp)/shift: {ratios['lut4_mult_nodsp_over_shift']:.2f}x, "
          f"mult(DSP)/shift: {ratios['lut4_mult_dsp_over_shift']:.2f}x")
    print(f"Largest array estimate on ULX3S-85F ({1 - RESERVED_LUT_SHARE:.0%} of "
          f"{ECP5_85F['lut4']} LUT4s for PEs, {ECP5_85F['dsp']} MULT18X18D):")
    for k in ("shift", "mult", "mult_nodsp"):
        a = arrays[k]
        print(f"  {k:11s} {a['pes']:6d} PEs ({a['bound']}-bound)")
    print(f"  shift / mult(DSP): {ratios['largest_array_shift_over_mult']:.2f}x")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    record = {"bench": "pe_resources", "device": "LFE5U-85F", "acc_bits": args.acc_bits,
              "exp_bits": args.exp_bits, "per_pe": res, "largest_array": arrays,
              "ratios": ratios, "reserved_lut_share": RESERVED_LUT_SHARE,
              "seconds": round(time.monotonic() - t0, 1)}
    (out / "bench_pe_resources.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'bench_pe_resources.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
