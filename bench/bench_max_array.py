"""The largest shift-PE array against the largest multiplier-PE array on the ULX3S-85F.

For each PE kind (``CoreConfig(pe="shift")`` and ``pe="mult"``, whose multiplier maps to one
MULT18X18D per PE) the benchmark

1. synthesises the real board design (``boards.build.board_top``: core, board memory, UART
   link) of the ULX3S target with YoWASP Yosys at ``FIT_ROWS`` rows of ``COLS`` columns,
   using the target's config with the memories of ``LEAN`` and only ``rows``, ``cols`` and
   ``pe`` changed;
2. fits every resource (LUT4 = LUT4 + 2 x CCU2C, FF, DP16KD, MULT18X18D) as
   ``fixed + per_pe * PEs`` by least squares and prints the residuals (``per_pe`` includes
   each row's share of per-row logic and buffers, 1/COLS per PE);
3. predicts, from every resource, the most rows of ``COLS`` (CoreConfig decides what is
   legal) that fit the LFE5U-85F, and names the resource that binds;
4. unless ``--quick``, places and routes the predicted maximum of each kind with
   nextpnr-ecp5 (``boards.build.build_design``, ``--router router2``), stepping down one row
   if it does not fit, misses the 25 MHz clock or does not finish in ``--pnr-timeout``.

LUT4s after packing: nextpnr counts more LUT4s than Yosys (route-through LUTs); the factor
measured on the 4x8 ULX3S build (25639 placed for 24455 synthesised) is applied to the
prediction, and LUT use is capped at ``LUT_CAP`` of the device to leave room for routing.
A place and route that does not finish in ``--pnr-timeout`` minutes counts as not fitting
(the bench steps down).

Run: ``.venv/bin/python bench/bench_max_array.py [--quick] [--kinds shift,mult] [--reuse]``
(``--reuse`` reports finished runs of byte-identical designs in the workdir again,
``boards.build.plan_is_built``).
Writes bench/out/max_array.json (after the prediction, again after each place and route).
Place and route of a near-full LFE5U-85F with the WebAssembly nextpnr takes hours on a
2-core machine.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from shiftbook.boards.build import (
    BuildError,
    BuildTimeoutError,
    DoesNotFitError,
    board_top,
    build_design,
    find_tools,
    synthesize_design,
)
from shiftbook.boards.targets import get_target
from shiftbook.config import ConfigError, CoreConfig

DEVICE = {"lut4": 83640, "ff": 83640, "bram": 208, "dsp": 156}
RESOURCE_NAMES = {"lut4": "LUT4", "ff": "FF", "bram": "DP16KD", "dsp": "MULT18X18D"}
# Array shapes are rows x COLS (16 output channels, as the "base" preset); the fit
# synthesises FIT_ROWS rows (3 points for 2 coefficients; a point whose synthesis fails is
# left out, see synth_point; 1 row is not used: YoWASP Yosys 0.70's abc9 asserts on it).
COLS = 16
FIT_ROWS = (2, 3, 4)
# The ULX3S board config with leaner memories, so that block RAM neither binds before the
# PEs do (the board config spends ~4 DP16KD per row and ~11 per column) nor fills the EBR
# rows: 32-bit bus (one DP16KD per activation row copy and per output/residual bank), 2 KiB
# activation copies, codebooks of up to 9 codes per codeword (the 3x3 PQ preset's d), a
# 32 KiB board memory. With max_d=18 and 64 KiB both maxima needed 92-94% of the DP16KDs and
# nextpnr's router2 stopped converging (overused wires rising again after 9-13 iterations).
LEAN = {"bus_bytes": 4, "abuf_bytes": 2048, "obuf_bytes": 1024, "wbuf_rows": 512,
        "max_d": 9, "mem_words": 1 << 13}
# nextpnr LUT4 (TRELLIS_COMB) per Yosys LUT4 (LUT4 + 2 x CCU2C), measured on the 4x8 ULX3S
# board build: 25639 / 24455.
PACK_FACTOR = 25639 / 24455
# Routing reserve on the predicted (packed) LUT4s. At 93% placed LUT4s with 94% of the
# DP16KDs router2 did not converge; with the lean memories 13x16 shift (predicted 92%, placed
# 88.8%) routed, so the cap is conservative by about one row (--start-rows probes beyond it).
LUT_CAP = 0.90


def say(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def shape_config(base: CoreConfig, kind: str, rows: int, cols: int) -> CoreConfig | None:
    """The board config with another array shape and PE kind, or None if that is illegal."""
    try:
        return dataclasses.replace(base, rows=rows, cols=cols, pe=kind,
                                   name=f"{kind}-{rows}x{cols}")
    except ConfigError:
        return None


def resources_of(cells: dict[str, int]) -> dict[str, int]:
    return {"lut4": cells.get("LUT4", 0) + 2 * cells.get("CCU2C", 0),
            "ff": sum(n for c, n in cells.items() if c.startswith("TRELLIS_FF")),
            "bram": cells.get("DP16KD", 0), "dsp": cells.get("MULT18X18D", 0)}


def fit(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Least-squares ``fixed + per_pe * PEs`` per resource (shapes rows x COLS)."""
    pes = np.array([p["rows"] * p["cols"] for p in points], dtype=float)
    design = np.stack([np.ones_like(pes), pes], axis=1)
    out = {}
    for key in RESOURCE_NAMES:
        y = np.array([p["resources"][key] for p in points], dtype=float)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        resid = y - design @ coef
        out[key] = {"fixed": float(coef[0]), "per_pe": float(coef[1]),
                    "max_abs_residual": float(np.abs(resid).max())}
    return out


def predict(model: dict[str, dict[str, float]], pes: int) -> dict[str, float]:
    return {k: m["fixed"] + m["per_pe"] * pes for k, m in model.items()}


def limits() -> dict[str, float]:
    """Usable amount of each resource, in Yosys units (LUT4s before packing)."""
    return {"lut4": DEVICE["lut4"] * LUT_CAP / PACK_FACTOR, "ff": DEVICE["ff"],
            "bram": DEVICE["bram"], "dsp": DEVICE["dsp"]}


def rows_by_resource(model: dict[str, dict[str, float]], base: CoreConfig, kind: str
                     ) -> dict[str, int]:
    """The most rows (of COLS PEs) each resource alone allows, within CoreConfig's limit."""
    lim = limits()
    legal = [r for r in range(1, 65) if shape_config(base, kind, r, COLS) is not None]
    return {k: max((r for r in legal if predict(model, r * COLS)[k] <= lim[k] + 0.5),
                   default=0) for k in lim}


def synth_point(target, base: CoreConfig, kind: str, rows: int, cols: int,
                work: Path, reuse: bool = False) -> dict[str, Any]:
    cfg = shape_config(base, kind, rows, cols)
    if cfg is None:
        raise ConfigError(f"{rows}x{cols} is not a legal shape")
    t0 = time.monotonic()
    cells = synthesize_design(target, board_top(target, cfg), work / f"syn_{kind}_{rows}x{cols}",
                              reuse=reuse)
    res = resources_of(cells)
    say(f"  synth {kind} {rows}x{cols}: LUT4 {res['lut4']}, FF {res['ff']}, DP16KD "
        f"{res['bram']}, DSP {res['dsp']} ({time.monotonic() - t0:.0f} s)")
    return {"rows": rows, "cols": cols, "resources": res, "cells": cells}


def place_and_route(target, base: CoreConfig, kind: str, shapes: list[tuple[int, int]],
                    work: Path, tries: int = 2, router: str = "router2", reuse: bool = False,
                    timeout_s: float | None = None) -> dict[str, Any]:
    """P&R the first shape; step down along ``shapes`` if it does not fit, misses timing or
    runs past ``timeout_s``."""
    attempts = []
    for rows, cols in shapes[:tries]:
        cfg = shape_config(base, kind, rows, cols)
        say(f"  place and route {kind} {rows}x{cols} ({rows * cols} PEs) ...")
        t0 = time.monotonic()
        try:
            rep = build_design(target, board_top(target, cfg), work / f"pnr_{kind}_{rows}x{cols}",
                               config_name=cfg.name, allow_timing_fail=True,
                               nextpnr_opts=f"--router {router}", reuse=reuse,
                               timeout_s=timeout_s)
        except (DoesNotFitError, BuildTimeoutError) as e:
            say(f"  {kind} {rows}x{cols}: {e}")
            attempts.append({"rows": rows, "cols": cols, "fits": False, "error": str(e)})
            continue
        except BuildError as e:
            say(f"  {kind} {rows}x{cols}: build failed: {e}")
            attempts.append({"rows": rows, "cols": cols, "fits": None, "error": str(e)})
            continue
        entry = {"rows": rows, "cols": cols, "fits": True, "resources": rep.resources,
                 "synthesised": resources_of(rep.yosys_cells),
                 "fmax_mhz": rep.fmax_mhz, "clk_mhz": rep.clk_mhz,
                 "timing_met": rep.timing_met, "reused": rep.reused,
                 "seconds": rep.seconds if rep.reused else round(time.monotonic() - t0)}
        attempts.append(entry)
        say(f"  {kind} {rows}x{cols}: LUT4 {rep.resources['lut']['used']}, Fmax "
            f"{rep.fmax_mhz:.1f} MHz ({'met' if rep.timing_met else 'MISSED'})")
        if rep.timing_met:
            return {"confirmed": entry, "attempts": attempts}
    return {"confirmed": None, "attempts": attempts}


def table(record: dict[str, Any]) -> str:
    hdr = (f"{'kind':6s}{'predicted':>10s}{'routed':>8s}{'PEs':>6s}{'LUT4 used/avail':>18s}"
           f"{'FF':>7s}{'DP16KD':>8s}{'DSP':>5s}{'Fmax':>8s}{'timing':>8s}  {'binds':11s}"
           f"{'LUT4/PE':>8s}")
    lines, notes = [hdr], []
    for kind, k in record["kinds"].items():
        pnr = (k.get("pnr") or {}).get("confirmed")
        pred = f"{k['max']['rows']}x{k['max']['cols']}"
        r, c = (pnr["rows"], pnr["cols"]) if pnr else (k["max"]["rows"], k["max"]["cols"])
        if pnr:
            res = pnr["resources"]
            lut = f"{res['lut']['used']}/{res['lut']['available']}"
            ff, bram, dsp = res["ff"]["used"], res["bram"]["used"], res["dsp"]["used"]
            fmax, met = f"{pnr['fmax_mhz']:.1f}", "met" if pnr["timing_met"] else "MISSED"
            routed = f"{r}x{c}"
        else:
            p = k["max"]["predicted"]
            lut = f"~{p['lut4'] * PACK_FACTOR:.0f}/{DEVICE['lut4']}"
            ff, bram, dsp = f"~{p['ff']:.0f}", f"~{p['bram']:.0f}", f"~{p['dsp']:.0f}"
            fmax, met, routed = "-", "not run", "-"
        lines.append(f"{kind:6s}{pred:>10s}{routed:>8s}{r * c:6d}{lut:>18s}{ff!s:>7s}"
                     f"{bram!s:>8s}{dsp!s:>5s}{fmax:>8s}{met:>8s}  {k['max']['binding']:11s}"
                     f"{k['fit']['lut4']['per_pe']:8.1f}")
        for a in (k.get("pnr") or {}).get("attempts", []):
            if a is not pnr and not a.get("timing_met"):
                notes.append(f"  {kind} {a['rows']}x{a['cols']}: "
                             + (a.get("error") or f"Fmax {a['fmax_mhz']:.1f} MHz, missed"))
    return "\n".join(lines + notes)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="synthesis and prediction only (no place and route)")
    mode.add_argument("--pnr", action="store_true", default=True,
                      help="also place and route the predicted maxima (default)")
    ap.add_argument("--kinds", default="shift,mult")
    ap.add_argument("--router", choices=("router1", "router2"), default="router2",
                    help="nextpnr router (default router2: on these large designs router1 showed "
                         "no progress in 40 minutes; docs/hw.md)")
    ap.add_argument("--reuse", action="store_true",
                    help="report finished synthesis and place-and-route runs of the identical "
                         "design found in the workdir instead of running them again")
    ap.add_argument("--pnr-kinds", default=None, metavar="KINDS",
                    help="place and route only these kinds (default: all of --kinds); the "
                         "others are reported as predicted")
    ap.add_argument("--start-rows", default="", metavar="KIND=R[,KIND=R]",
                    help="start the place-and-route search of a kind at R rows instead of the "
                         "predicted maximum (e.g. mult=8 after the maximum did not route)")
    ap.add_argument("--jobs", type=int, default=2, help="synthesis and P&R runs at once")
    ap.add_argument("--pnr-timeout", type=float, default=240, metavar="MIN",
                    help="minutes one place and route may take before it counts as not "
                         "routable and the next smaller shape is tried (default 240)")
    ap.add_argument("--workdir", default=str(Path(__file__).parent.parent / "build" / "max_array"),
                    help="synthesis and P&R outputs (default: build/max_array)")
    ap.add_argument("-o", "--output", default=str(Path(__file__).parent / "out"))
    args = ap.parse_args(argv)
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    try:
        start_rows = {k.strip(): int(v) for k, v in (item.split("=") for item in
                                                     args.start_rows.split(",") if item)}
    except ValueError:
        ap.error(f"--start-rows wants KIND=ROWS[,KIND=ROWS], not {args.start_rows!r}")
    pnr_kinds = kinds if args.pnr_kinds is None else [
        k.strip() for k in args.pnr_kinds.split(",") if k.strip()]
    unknown = sorted((set(start_rows) | set(pnr_kinds)) - set(kinds))
    if unknown:
        ap.error(f"kind(s) {', '.join(unknown)} not in --kinds {args.kinds}")
    target = get_target("ulx3s-85f")
    base = dataclasses.replace(target.config, **LEAN, name="ulx3s-lean")
    find_tools("ecp5")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    record: dict[str, Any] = {
        "bench": "max_array", "board": target.name, "device": "LFE5U-85F",
        "clk_mhz": target.clk_hz / 1e6, "base_config": base.to_dict(), "device_limits": DEVICE,
        "pack_factor": PACK_FACTOR, "lut_cap": LUT_CAP, "cols": COLS, "fit_rows": FIT_ROWS,
        "flow": "board top (core + board memory + UART link), YoWASP yosys synth_ecp5 + "
                "nextpnr-ecp5", "kinds": {}}

    lock = threading.Lock()

    def write() -> None:
        with lock:
            _write()

    def _write() -> None:
        record["seconds"] = round(time.monotonic() - t_start)
        if len(record["kinds"]) == 2 and all("max" in k for k in record["kinds"].values()):
            def pes(k: dict) -> int:
                conf = (k.get("pnr") or {}).get("confirmed")
                return (conf["rows"] * conf["cols"]) if conf else k["max"]["pes"]
            ks = record["kinds"]
            record["ratio_shift_over_mult_pes"] = pes(ks["shift"]) / pes(ks["mult"])
            record["ratio_source"] = ("place and route" if all(
                (k.get("pnr") or {}).get("confirmed") for k in ks.values()) else "prediction")
        (out / "max_array.json").write_text(json.dumps(record, indent=2) + "\n")

    work = Path(args.workdir)
    say(f"synthesising {len(FIT_ROWS)} shapes of the ULX3S board design per kind "
        f"({args.jobs} at once)")

    def synth(kind: str, r: int) -> dict[str, Any] | None:
        try:
            return synth_point(target, base, kind, r, COLS, work, reuse=args.reuse)
        except BuildError as e:    # YoWASP Yosys 0.70's abc9 asserts on a few netlists
            say(f"  synth {kind} {r}x{COLS} failed, left out of the fit: {e}")
            return None
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        futures = {(kind, r): pool.submit(synth, kind, r) for kind in kinds for r in FIT_ROWS}
        synthesised = {key: f.result() for key, f in futures.items()}
    for kind in kinds:
        points = [synthesised[(kind, r)] for r in FIT_ROWS if synthesised[(kind, r)]]
        if len(points) < 3:
            raise RuntimeError(f"too few {kind} shapes synthesised for a fit")
        model = fit(points)
        for key, m in model.items():
            say(f"  fit {RESOURCE_NAMES[key]:10s} = {m['fixed']:8.1f} + {m['per_pe']:7.2f} * "
                f"PEs (max |residual| {m['max_abs_residual']:.1f})")
        by_res = rows_by_resource(model, base, kind)
        rows = min(by_res.values())
        if rows < 1:
            raise RuntimeError(f"no {kind} array fits the LFE5U-85F by the model")
        bind = min(by_res, key=lambda k: (by_res[k], k != "dsp"))
        say(f"{kind}: largest predicted array {rows}x{COLS} = {rows * COLS} PEs, bound by "
            f"{RESOURCE_NAMES[bind]}; rows each resource allows: " + ", ".join(
                f"{RESOURCE_NAMES[k]} {v}" for k, v in by_res.items()))
        any_shape = {RESOURCE_NAMES[k]: int((lim - model[k]["fixed"]) // model[k]["per_pe"])
                     for k, lim in limits().items() if model[k]["per_pe"] > 0.5}
        say(f"{kind}: PEs each resource allows at any shape (ignoring CoreConfig's 64x64): "
            + ", ".join(f"{k} {v}" for k, v in any_shape.items()))
        record["kinds"][kind] = {
            "points": points, "fit": model, "pes_any_shape": any_shape,
            "rows_by_resource": {RESOURCE_NAMES[k]: v for k, v in by_res.items()},
            "max": {"rows": rows, "cols": COLS, "pes": rows * COLS,
                    "binding": RESOURCE_NAMES[bind], "predicted": predict(model, rows * COLS)}}
        write()
    if not args.quick:
        # Both kinds at once (nextpnr is single-threaded; each build runs in a subprocess).
        def pnr(kind: str) -> None:
            k = record["kinds"][kind]
            top = start_rows.get(kind, k["max"]["rows"])
            if top != k["max"]["rows"]:
                k["pnr_start_rows"] = top
                say(f"{kind}: place and route starts at {top} rows (--start-rows), the "
                    f"prediction is {k['max']['rows']}")
            shapes = [(r, COLS) for r in range(top, max(top - 4, 0), -1)]
            k["pnr"] = place_and_route(target, base, kind, shapes, work, router=args.router,
                                       reuse=args.reuse, timeout_s=60 * args.pnr_timeout)
            write()
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for f in [pool.submit(pnr, kind) for kind in pnr_kinds]:
                f.result()
    write()
    print()
    print(f"Largest arrays on the ULX3S-85F (LFE5U-85F) at {record['clk_mhz']:.0f} MHz "
          f"(board design: core + board memory + UART link; '~' = predicted, not placed)")
    print(table(record))
    if "ratio_shift_over_mult_pes" in record:
        print(f"shift PEs / mult PEs: {record['ratio_shift_over_mult_pes']:.2f}x "
              f"({record['ratio_source']})")
    ks = record["kinds"]
    if all(k in ks for k in ("shift", "mult")):
        s_any, m_any = (min(ks[k]["pes_any_shape"].values()) for k in ("shift", "mult"))
        print(f"at any shape (predicted, not only rows x {COLS}): {s_any} shift PEs / {m_any} "
              f"mult PEs = {s_any / m_any:.2f}x")
    print(f"wrote {out / 'max_array.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
