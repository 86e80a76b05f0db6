"""ECP5 resources per PE: the shift PE against the int8 multiplier PE, side by side.

Each PE (``hw/pe.py``) is synthesised alone with YoWASP Yosys ``synth_ecp5``, once with DSP
inference (the multiplier goes into a MULT18X18D) and once with ``-nodsp`` (everything in
LUTs), and once more with ``-nowidelut`` (no PFU-mux LUT5/6 mapping, which costs more LUT4s
here). The two-term shift PE (``hw/pe.TwoTermShiftPE``, issue 16: two shifters and an adder)
is synthesised beside them for comparison. LUT4s count carry cells as two LUT4s each (a CCU2C
holds two). The largest array of
each kind on the ULX3S-85F, with the whole board design synthesised, placed and routed, is
``bench/bench_max_array.py``.

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
from shiftbook.hw.pe import TwoTermShiftPE, make_pe


def synth_pe(kind: str, *, acc_bits: int, exp_bits: int, dsp: bool, workdir: Path,
             yosys: str, widelut: bool = True) -> dict[str, int]:
    pe = TwoTermShiftPE(acc_bits=acc_bits, exp_bits=exp_bits) if kind == "two-term" \
        else make_pe(kind, acc_bits=acc_bits, exp_bits=exp_bits)
    il = workdir / f"{kind}_{'dsp' if dsp else 'nodsp'}{'' if widelut else '_nowidelut'}.il"
    il.write_text(rtlil.convert(pe, name="pe"))
    log = il.with_suffix(".log")
    opts = ("" if dsp else " -nodsp") + ("" if widelut else " -nowidelut")
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--acc-bits", type=int, default=32)
    ap.add_argument("--exp-bits", type=int, default=4)
    ap.add_argument("-o", "--output", default=str(Path(__file__).parent / "out"))
    args = ap.parse_args(argv)
    yosys = find_tools("ecp5")["YOSYS"]
    t0 = time.monotonic()
    res: dict[str, dict] = {}
    variants = {"shift_dsp": ("shift", True, True), "mult_dsp": ("mult", True, True),
                "mult_nodsp": ("mult", False, True), "shift_nodsp": ("shift", False, True),
                "shift_nowidelut": ("shift", True, False),
                "mult_nowidelut": ("mult", True, False)}
    two_term = args.acc_bits >= 9 + (1 << args.exp_bits)   # holds the sum of two products
    if two_term:
        variants["two_term"] = ("two-term", True, True)
    with tempfile.TemporaryDirectory() as tmp:
        for key, (kind, dsp, widelut) in variants.items():
            res[key] = synth_pe(kind, acc_bits=args.acc_bits, exp_bits=args.exp_bits,
                                dsp=dsp, widelut=widelut, workdir=Path(tmp), yosys=yosys)
    ratios = {
        "lut4_mult_nodsp_over_shift": res["mult_nodsp"]["lut4"] / res["shift_dsp"]["lut4"],
        "lut4_mult_dsp_over_shift": res["mult_dsp"]["lut4"] / res["shift_dsp"]["lut4"],
        "ff_mult_over_shift": res["mult_nodsp"]["ff"] / max(res["shift_dsp"]["ff"], 1),
    }
    if two_term:
        ratios["lut4_two_term_over_shift"] = res["two_term"]["lut4"] / res["shift_dsp"]["lut4"]
    print(f"ECP5 resources per PE (acc_bits={args.acc_bits}, exp_bits={args.exp_bits}; "
          f"LUT4 = LUT4 + 2 x CCU2C)")
    print(f"  {'':26s}{'LUT4':>7s}{'(LUT4':>7s}{'CCU2C)':>8s}{'FF':>6s}{'DSP':>5s}")
    for key, label in (("shift_dsp", "shift PE"), ("mult_dsp", "mult PE (DSP)"),
                       ("mult_nodsp", "mult PE (-nodsp)"), ("shift_nodsp", "shift PE (-nodsp)"),
                       ("shift_nowidelut", "shift PE (-nowidelut)"),
                       ("mult_nowidelut", "mult PE (DSP, -nowidelut)"),
                       ("two_term", "two-term shift PE (*)")):
        if key not in res:
            continue
        r = res[key]
        print(f"  {label:26s}{r['lut4']:7d}{r['lut4_plain']:7d}{r['ccu2c']:8d}{r['ff']:6d}"
              f"{r['dsp']:5d}")
    print(f"  LUT4 ratio mult(-nodsp)/shift: {ratios['lut4_mult_nodsp_over_shift']:.2f}x, "
          f"mult(DSP)/shift: {ratios['lut4_mult_dsp_over_shift']:.2f}x")
    if two_term:
        print(f"  two-term/shift: {ratios['lut4_two_term_over_shift']:.2f}x. (*) two shifters "
              f"and an adder, one step per two-term weight: built for this comparison; the "
              f"core runs two-term layers on the shift PE, one reduction per term")
    else:
        print(f"  (no two-term PE: acc_bits={args.acc_bits} cannot hold the sum of two "
              f"{8 + (1 << args.exp_bits) - 1}-bit products)")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    record = {"bench": "pe_resources", "device": "LFE5U-85F", "acc_bits": args.acc_bits,
              "exp_bits": args.exp_bits, "per_pe": res, "ratios": ratios,
              "seconds": round(time.monotonic() - t0, 1)}
    (out / "bench_pe_resources.json").write_text(json.dumps(record, indent=2) + "\n")
    print(f"wrote {out / 'bench_pe_resources.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
