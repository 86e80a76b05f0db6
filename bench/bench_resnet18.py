"""ResNet-18 at 224x224 on the 16x16 `base` array, end to end in RTL (issue 4).

A benchmark, not a test: compiles ResNet-18 (seeded random weights, a few seeded random
calibration images), optionally runs the functional simulator, runs the whole program on the
Verilator model of the core and checks every layer bit-exactly against the golden reference.
Prints a per-layer table (name, op, MACs, ideal cycles, RTL cycles at the MARKs, utilization =
ideal / RTL, bit-exact, and from the cycle model: PE-array steps, bus words, weight re-read
factor, to see whether a layer is compute- or memory-bound), totals, the utilization of the
3x3 convolutions (target >= 0.80) and the wall time of every phase (target: RTL run under 15
minutes). Writes bench/out/resnet18.json.

    .venv/bin/python bench/bench_resnet18.py [--calib 2] [--functional] [--bundle DIR]

``--bundle DIR`` reuses an existing bundle (e.g. from `shiftbook compile resnet18 --config
base -o DIR`) when it exists, else compiles into it.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUNDLE = ROOT / "build" / "bench" / "resnet18_bundle"
DEFAULT_OUT = ROOT / "bench" / "out" / "resnet18.json"
UTIL_TARGET_3X3 = 0.80
RTL_WALL_TARGET_S = 15 * 60


def _note(msg: str) -> None:
    print(f"[bench_resnet18 {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _peak_rss_mb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def compile_phase(model: str, config: str, calib: int, seed: int, bundle: Path) -> dict[str, Any]:
    """Lower + compile ``model`` and write the bundle; returns the phase's record."""
    from shiftbook.sw.bundle import write_bundle
    from shiftbook.sw.flow_compile import compile_model

    t0 = time.monotonic()
    low, prog, cfg, info = compile_model(model, config=config, calib=calib, seed=seed)
    t1 = time.monotonic()
    write_bundle(prog, low.graph, str(bundle))
    t2 = time.monotonic()
    return {**info, "config": cfg.name, "instructions": len(prog.insns),
            "memory_bytes": len(prog.memory), "ideal_cycles": int(prog.ideal_cycles),
            "lower_compile_s": round(t1 - t0, 2), "write_s": round(t2 - t1, 2),
            "wall_s": round(t2 - t0, 2), "peak_rss_mb": _peak_rss_mb()}


def profile_of(bundle: Any) -> dict[int, dict[str, int]]:
    """Per layer, from the cycle model: PE-array steps, bus words moved, weight bytes read
    versus stored (> 1 means weights are re-read, e.g. when a layer's reduction does not fit
    in half the weight buffer)."""
    from shiftbook.timing import estimate

    meta = {lay.index: lay for lay in bundle.layers}
    out: dict[int, dict[str, int]] = {}
    for seg in estimate(bundle).layers:
        lay = meta.get(int(seg.mark))
        out[int(seg.mark)] = {"compute_steps": int(seg.compute_steps),
                              "dma_words": int(seg.dma_words),
                              "weight_bytes": lay.weight_bytes if lay else 0,
                              "weight_bytes_read": lay.weight_bytes_read if lay else 0}
    return out


def _kernel_of(bundle: Any) -> dict[int, tuple[int, int] | None]:
    out: dict[int, tuple[int, int] | None] = {}
    for lay in bundle.layers:
        out[lay.index] = lay.kernel
    return out


def _op_label(lay: dict[str, Any], kern: tuple[int, int] | None) -> str:
    if lay["op"] == "conv2d" and kern is not None:
        return f"conv{kern[0]}x{kern[1]}"
    return str(lay["op"])


def print_table(rec: dict[str, Any], kernels: dict[int, tuple[int, int] | None]) -> None:
    hdr = ("#", "layer", "op", "output", "MACs", "ideal", "RTL cycles", "util", "exact",
           "steps", "bus words", "w read/size")
    rows = [hdr]
    for lay in rec["layers"]:
        cyc = lay["cycles"]
        wr = (f"{lay['weight_bytes_read'] / lay['weight_bytes']:.2f}"
              if lay.get("weight_bytes") else "-")
        rows.append((str(lay["index"]), lay["name"], _op_label(lay, kernels.get(lay["index"])),
                     "x".join(map(str, lay["shape"])), f"{lay['macs']:,}",
                     f"{lay['ideal_cycles']:,}", "-" if cyc is None else f"{cyc:,}",
                     "-" if lay["utilization"] is None else f"{lay['utilization']:.3f}",
                     "yes" if lay["bit_exact"] else f"NO ({lay['mismatches']})",
                     f"{lay.get('compute_steps', 0):,}", f"{lay.get('dma_words', 0):,}", wr))
    widths = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
    right = {0, 4, 5, 6, 7, 9, 10, 11}
    for r in rows:
        print("  ".join(c.rjust(w) if i in right else c.ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())


def group_totals(layers: list[dict[str, Any]],
                 kernels: dict[int, tuple[int, int] | None]) -> dict[str, dict[str, Any]]:
    """Ideal / measured cycles and utilization per op kind (conv3x3, conv1x1, conv7x7, ...)."""
    groups: dict[str, dict[str, Any]] = {}
    for lay in layers:
        g = groups.setdefault(_op_label(lay, kernels.get(lay["index"])),
                              {"layers": 0, "macs": 0, "ideal_cycles": 0, "cycles": 0})
        g["layers"] += 1
        g["macs"] += lay["macs"]
        g["ideal_cycles"] += lay["ideal_cycles"]
        g["cycles"] += lay["cycles"] or 0
    for g in groups.values():
        g["utilization"] = round(g["ideal_cycles"] / g["cycles"], 4) if g["cycles"] else None
    return groups


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--config", default="base")
    ap.add_argument("--calib", type=int, default=2, help="calibration images (default 2)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bundle", type=Path, default=DEFAULT_BUNDLE,
                    help=f"bundle directory (default {DEFAULT_BUNDLE.relative_to(ROOT)})")
    ap.add_argument("--recompile", action="store_true",
                    help="compile even if --bundle already holds a bundle")
    ap.add_argument("--functional", action="store_true",
                    help="also run the functional simulator (checked bit-exactly)")
    ap.add_argument("--no-rtl", action="store_true", help="skip the RTL run")
    ap.add_argument("--timeout-cycles", type=int, default=0,
                    help="RTL cycle limit (default 0: none)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args()

    from shiftbook.sim.network import simulate_bundle
    from shiftbook.sw.bundle import load_bundle

    t_all = time.monotonic()
    result: dict[str, Any] = {"model": args.model, "config": args.config,
                              "bundle": str(args.bundle.resolve()), "phases": {}}
    phases = result["phases"]
    have = (args.bundle / "manifest.json").exists()
    if have and not args.recompile:
        _note(f"compile: reusing bundle {args.bundle}")
        phases["compile"] = {"reused": True}
    else:
        _note(f"compile: {args.model} for {args.config}, {args.calib} calibration image(s)")
        args.bundle.parent.mkdir(parents=True, exist_ok=True)
        phases["compile"] = compile_phase(args.model, args.config, args.calib, args.seed,
                                          args.bundle)
        _note(f"compile: {phases['compile']['wall_s']} s, peak RSS "
              f"{phases['compile']['peak_rss_mb']} MB")
    bundle = load_bundle(args.bundle)
    kernels = _kernel_of(bundle)
    cfg = bundle.config
    result["config"] = cfg.name
    result["config_hash"] = cfg.hash
    result["core_config"] = cfg.to_dict()
    result["instructions"] = bundle.manifest.program.instructions
    _note(f"core {cfg.name} ({cfg.hash}): {cfg.rows}x{cfg.cols} PEs, wbuf_rows {cfg.wbuf_rows}, "
          f"abuf {cfg.abuf_bytes} B, obuf {cfg.obuf_bytes} B, bus {cfg.bus_bytes} B; "
          f"{result['instructions']} instructions")
    ok = True

    if args.functional:
        _note("functional: running")
        fr = simulate_bundle(args.bundle, "functional", progress=_note).record
        phases["functional"] = {"wall_s": fr["wall_s"], "bit_exact": fr["bit_exact"],
                                "mismatches": fr["mismatches"],
                                "estimate_cycles": fr["cycles"],
                                "functional_cycles": fr.get("functional_cycles")}
        _note(f"functional: bit-exact {fr['bit_exact']}, {fr['wall_s']} s")
        ok &= bool(fr["bit_exact"])

    rec = None
    if not args.no_rtl:
        _note("rtl: running (MARKs printed as they arrive)")
        t0 = time.monotonic()
        rec = simulate_bundle(args.bundle, "rtl", progress=_note, rtl_progress=True,
                              timeout_cycles=args.timeout_cycles).record
        wall = time.monotonic() - t0
        phases["rtl"] = {"wall_s": round(wall, 2), "sim_wall_s": rec.get("rtl_wall_s"),
                         "bit_exact": rec["bit_exact"], "mismatches": rec["mismatches"],
                         "cycles": rec["cycles"], "estimate_cycles": rec.get("estimate_cycles"),
                         "cycles_per_s": round(rec["cycles"] / rec["rtl_wall_s"])
                         if rec.get("rtl_wall_s") else None,
                         "target_wall_s": RTL_WALL_TARGET_S,
                         "meets_wall_target": wall < RTL_WALL_TARGET_S}
        ok &= bool(rec["bit_exact"])
        prof = profile_of(bundle)
        for lay in rec["layers"]:
            lay["kernel"] = list(kernels[lay["index"]]) if kernels.get(lay["index"]) else None
            lay.update(prof.get(lay["index"], {}))
        result["layers"] = rec["layers"]
        groups = group_totals(rec["layers"], kernels)
        result["by_op"] = groups
        result.update({"cycles": rec["cycles"], "ideal_cycles": rec["ideal_cycles"],
                       "utilization": rec["utilization"], "bit_exact": rec["bit_exact"],
                       "macs": sum(lay["macs"] for lay in rec["layers"])})
        c3 = groups.get("conv3x3")
        result["utilization_conv3x3"] = c3["utilization"] if c3 else None
        result["meets_util_target_conv3x3"] = bool(
            c3 and c3["utilization"] is not None and c3["utilization"] >= UTIL_TARGET_3X3)

    result["wall_s"] = round(time.monotonic() - t_all, 2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")

    print()
    if rec is not None:
        print_table(rec, kernels)
        print()
        print(f"{'op':<10} {'layers':>6} {'MACs':>15} {'ideal':>12} {'RTL cycles':>12} "
              f"{'util':>6}")
        for name, g in sorted(result["by_op"].items()):
            u = "-" if g["utilization"] is None else f"{g['utilization']:.3f}"
            print(f"{name:<10} {g['layers']:>6} {g['macs']:>15,} {g['ideal_cycles']:>12,} "
                  f"{g['cycles']:>12,} {u:>6}")
        print(f"total: {len(rec['layers'])} layers, {result['macs']:,} MACs, "
              f"{rec['ideal_cycles']:,} ideal cycles, {rec['cycles']:,} RTL cycles "
              f"(estimate {rec.get('estimate_cycles')}), utilization {rec['utilization']}")
        u3 = result["utilization_conv3x3"]
        print(f"3x3 conv utilization: {u3} (target >= {UTIL_TARGET_3X3}: "
              f"{'met' if result['meets_util_target_conv3x3'] else 'NOT met'})")
        print(f"bit-exact: {'yes, every layer' if rec['bit_exact'] else 'NO'}"
              + ("" if rec["bit_exact"] else f" ({rec.get('first_mismatch_text')})"))
    for name, ph in phases.items():
        if "wall_s" in ph:
            extra = (f" (Verilator simulation {ph['sim_wall_s']} s; the rest is golden, compare "
                     f"and a Verilator build when not cached)" if ph.get("sim_wall_s") else "")
            print(f"wall {name}: {ph['wall_s']} s{extra}")
    if "rtl" in phases:
        r = phases["rtl"]
        print(f"RTL: {r['cycles_per_s']} cycles/s; under 15 min: "
              f"{'yes' if r['meets_wall_target'] else 'NO'}")
    print(f"wall total: {result['wall_s']} s; wrote {args.out}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
