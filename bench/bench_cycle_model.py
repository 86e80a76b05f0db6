"""Cycle model vs RTL over a corpus of layers: prints layer, model, RTL, error % per MARK
segment and writes bench/out/cycle_model.json.

Each corpus entry is compiled into a bundle under build/cycle_model/<name>/ and run once in
RTL (Verilator); the measured cycles and MARKs are cached in build/cycle_model/rtl/ (keyed by
the memory image and the Verilator build), so a second run only re-evaluates the model.

    .venv/bin/python bench/bench_cycle_model.py [--only NAME_SUBSTRING] [--no-rtl]
        [--stall-pct P [--stall-seed S]]

With ``--stall-pct P`` the RTL's external memory refuses requests on P % of cycles (seeded
xorshift, ``sim/rtl/extmem.v``) and the model runs with the same expected stall rate; the
JSON goes to ``bench/out/cycle_model_stall<P>.json`` and also lists the no-stall model's
error against the stalled RTL.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "cycle_model"
OUT = ROOT / "bench" / "out" / "cycle_model.json"


@dataclass(frozen=True)
class Case:
    name: str
    config: str            # preset name
    op: str = "conv"
    cin: int = 16
    cout: int = 32
    kernel: int = 3
    stride: int = 1
    size: int = 14
    residual: bool = False
    chain: tuple[tuple[int, int, int], ...] = ()   # (cout, kernel, stride) per layer
    net: str = ""          # a built-in network (sw.models): its conv layers, seeded weights


def config_of(spec: str):  # -> CoreConfig
    """A preset name, optionally with overrides: ``small:bus_bytes=16,mem_latency=12``."""
    import dataclasses

    from shiftbook.config import load_config

    name, _, over = spec.partition(":")
    cfg = load_config(name)
    if over:
        kv = {k: int(v) for k, v in (item.split("=") for item in over.split(","))}
        cfg = dataclasses.replace(cfg, name=f"{name}-" + "-".join(
            f"{k}{v}" for k, v in kv.items()), **kv)
    return cfg


def net_graph(case: Case, cfg):  # -> (Graph, inputs)
    """The convolution layers of a built-in network (seeded random weights, lowered by
    sw.frontend with calibration images): every Conv2d up to the pooling head, which the
    compiler does not map yet."""
    import numpy as np

    from shiftbook.sw.frontend import lower
    from shiftbook.sw.ir import Graph

    rng = np.random.default_rng(0)
    imgs = rng.normal(0, 1, (4, 3, 32, 32)).astype(np.float32)
    lw = lower(case.net, calib=imgs, config=cfg)
    ops = []
    for op in lw.graph.ops:
        if type(op).__name__ != "Conv2d":
            break
        ops.append(op)
    g = Graph(tensors=dict(lw.graph.tensors), ops=ops, inputs=list(lw.graph.inputs),
              outputs=[ops[-1].output])
    name = g.inputs[0]
    return g, {name: np.asarray(lw.run(imgs[:1])[name])[0]}


def chain_graph(case: Case, exp_bits: int, acc_bits: int):  # -> (Graph, inputs)
    """A seeded multi-layer conv chain ``x -> t1 -> ... -> tN`` (one MARK per layer)."""
    import numpy as np

    from shiftbook.sw.ir import Graph, TensorSpec
    from shiftbook.sw.reference import quantize_conv, run_graph

    rng = np.random.default_rng(0)
    n = len(case.chain)
    g = Graph(inputs=["x"], outputs=[f"t{n}"])
    cur = g.add_tensor(TensorSpec("x", (case.cin, case.size, case.size), 5))
    xv = np.clip(np.rint(rng.normal(0, 32, cur.shape)), -128, 127).astype(np.int64)
    val = xv
    for i, (co, k, s) in enumerate(case.chain):
        w = rng.normal(0, np.sqrt(2 / (cur.shape[0] * k * k)), (co, cur.shape[0], k, k))
        op, spec = quantize_conv(f"conv{i}", cur, f"t{i + 1}", w, rng.normal(0, 0.1, co),
                                 exp_bits=exp_bits, acc_bits=acc_bits, calib=val,
                                 stride=(s, s), padding=(k // 2,) * 4, relu=True)
        g.add_tensor(spec)
        g.add_op(op)
        val = run_graph(g, {"x": xv})[spec.name]
        cur = spec
    return g, {"x": xv}


CORPUS: tuple[Case, ...] = (
    # small (4x8, bus 8 B, latency 8)
    Case("small_3x3_16_32_s14", "small"),
    Case("small_1x1_16_32_s14", "small", kernel=1),
    Case("small_3x3_s2_16_32_s16", "small", stride=2, size=16),
    Case("small_7x7_3_8_s16", "small", cin=3, cout=8, kernel=7, size=16),
    Case("small_odd_5_7_s9", "small", cin=5, cout=7, size=9),
    Case("small_linear_64_10", "small", op="linear", cin=64, cout=10),
    Case("small_residual_16_16_s8", "small", cin=16, cout=16, size=8, residual=True),
    Case("small_1x1_s2_16_32_s16", "small", kernel=1, stride=2, size=16),
    Case("small_3x3_64_64_s8", "small", cin=64, cout=64, size=8),
    # tiny (2x2, latency 4, small buffers: multi-band and multi-chunk)
    Case("tiny_3x3_4_4_s9", "tiny", cin=4, cout=4, size=9),
    Case("tiny_7x7_4_4_s9", "tiny", cin=4, cout=4, kernel=7, size=9),
    Case("tiny_3x3_8_6_s24_bands", "tiny", cin=8, cout=6, size=24),
    Case("tiny_3x3_130_4_s4_chunks", "tiny", cin=130, cout=4, size=4),
    Case("tiny_1x1_s2_6_5_s11", "tiny", cin=6, cout=5, kernel=1, stride=2, size=11),
    Case("tiny_linear_40_3", "tiny", op="linear", cin=40, cout=3),
    # multi-band: a 1 KiB activation buffer holds a few input rows at a time
    Case("tinyA1k_3x3_8_6_s16_bands", "tiny:abuf_bytes=1024", cin=8, cout=6, size=16),
    Case("tinyA1k_3x3_s2_6_4_s20_bands", "tiny:abuf_bytes=1024", cin=6, cout=4, stride=2,
         size=20),
    Case("tinyA1k_chain2_bands", "tiny:abuf_bytes=1024", cin=4, size=16,
         chain=((6, 3, 1), (4, 3, 2))),
    # base (16x16)
    Case("base_3x3_16_16_s8", "base", cin=16, cout=16, size=8),
    Case("base_1x1_s2_16_32_s16", "base", kernel=1, stride=2, size=16),
    Case("base_3x3_3_16_s32_stem", "base", cin=3, cout=16, size=32),
    Case("base_3x3_64_64_s14", "base", cin=64, cout=64, size=14),
    # ResNet-20-shaped stages on base: 16@32x32, 16->32 stride 2, 32->64 stride 2, 64@8x8
    Case("base_r20_16_16_s32", "base", cin=16, cout=16, size=32, residual=True),
    Case("base_r20_16_32_s2", "base", cin=16, cout=32, stride=2, size=32),
    Case("base_r20_32_64_s2", "base", cin=32, cout=64, stride=2, size=16),
    Case("base_r20_64_64_s8", "base", cin=64, cout=64, size=8, residual=True),
    # multi-layer programs (one MARK per layer)
    Case("small_chain3", "small", cin=3, size=12, chain=((8, 3, 1), (16, 3, 2), (16, 1, 1))),
    Case("tiny_chain3", "tiny", cin=3, size=10, chain=((4, 3, 1), (6, 3, 2), (5, 1, 1))),
    Case("base_chain3", "base", cin=3, size=16, chain=((16, 3, 1), (32, 3, 2), (32, 3, 1))),
    # whole networks' conv layers (9 for ResNet-8, 21 for ResNet-20, with residuals and
    # stride-2 downsampling)
    Case("resnet8_convs_small", "small", net="resnet8"),
    Case("resnet20_convs_small", "small", net="resnet20"),
    # other bus widths and latencies (instruction assembly from 4 words, 1 word, 1/2 word)
    Case("b4_3x3_8_8_s8", "tiny:bus_bytes=4,mem_latency=2", cin=8, cout=8, size=8),
    Case("b4_chain2", "tiny:bus_bytes=4,mem_latency=2", cin=3, size=9,
         chain=((4, 3, 1), (6, 1, 2))),
    Case("b16_3x3_16_16_s10", "small:bus_bytes=16,mem_latency=12", cin=16, cout=16, size=10),
    Case("b16_chain2", "small:bus_bytes=16,mem_latency=12", cin=3, size=12,
         chain=((8, 3, 1), (16, 1, 2))),
    Case("b32_3x3_16_16_s10", "small:bus_bytes=32,mem_latency=3", cin=16, cout=16, size=10),
    Case("b32_linear_64_10", "small:bus_bytes=32,mem_latency=3", op="linear", cin=64, cout=10),
)


def _loads(bdir: Path) -> bool:
    """A cached bundle this shiftbook still reads (an older format is rewritten)."""
    from shiftbook.sw.bundle import BundleError, load_bundle

    try:
        load_bundle(bdir)
    except BundleError:
        return False
    return True


def _bundle(case: Case) -> Path:
    from shiftbook.sw.bundle import write_bundle
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer

    cfg = config_of(case.config)
    bdir = CACHE / case.name / "bundle"
    if case.net:
        graph, inputs = net_graph(case, cfg)
    elif case.chain:
        graph, inputs = chain_graph(case, cfg.exp_bits, cfg.acc_bits)
    else:
        layer = random_layer(case.op, case.cin, case.cout, case.kernel, case.stride, None,
                             case.size, seed=0, exp_bits=cfg.exp_bits, acc_bits=cfg.acc_bits,
                             residual=case.residual)
        graph, inputs = layer.graph, layer.inputs
    prog = compile_graph(graph, cfg, inputs)
    old = bdir / "memory.bin"
    if not (old.exists() and old.read_bytes() == prog.memory and _loads(bdir)):
        write_bundle(prog, graph, bdir, force=True)     # the bench's own cache folder
    return bdir


def rtl_measure(bdir: Path, *, run: bool = True, stall_pct: int = 0,
                stall_seed: int = 1) -> dict | None:
    """The RTL result of the bundle in ``bdir`` ({"cycles", "marks"}), cached and keyed by
    the memory image, the memory's stall setting and the Verilator build (a gateware change
    re-runs it); with ``run=False`` only a cache entry (of any build) is returned, or None."""
    mem_hash = hashlib.sha256((bdir / "memory.bin").read_bytes()).hexdigest()[:16]
    stall = f"_stall{stall_pct}_{stall_seed}" if stall_pct else ""
    cache = CACHE / "rtl" / f"{mem_hash}{stall}.json"
    cached = json.loads(cache.read_text()) if cache.exists() else {}
    if not run:
        return cached if cached.get("memory_sha") == mem_hash else None
    from shiftbook.sim.rtl.runner import build, run_image
    from shiftbook.sw.bundle import load_bundle

    b = load_bundle(bdir)
    build_key = build(b.config).name
    if cached.get("memory_sha") == mem_hash and cached.get("build") == build_key:
        return cached
    t0 = time.monotonic()
    res = run_image(b.config, b.memory, stall_seed=stall_seed if stall_pct else None,
                    stall_pct=stall_pct)
    d = {"memory_sha": mem_hash, "build": build_key, "cycles": int(res.cycles),
         "marks": [[int(i), int(c)] for i, c in res.marks], "wall_s": time.monotonic() - t0}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(d))
    return d


def compare(bdir: Path, rtl: dict, stall: float = 0.0) -> dict:
    from shiftbook.sw.bundle import load_bundle
    from shiftbook.timing import compare_marks, estimate

    b = load_bundle(bdir)
    est = estimate(b, stall=stall)
    return compare_marks(est, rtl["cycles"], [tuple(m) for m in rtl["marks"]])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default="", help="run the cases whose name contains this")
    ap.add_argument("--no-rtl", action="store_true", help="use cached RTL results only")
    ap.add_argument("--bundle", action="append", default=[], metavar="DIR",
                    help="also validate this bundle (e.g. a whole network; repeatable)")
    ap.add_argument("--stall-pct", type=int, default=0, metavar="P",
                    help="RTL memory stalls on P%% of cycles; the model uses the same rate")
    ap.add_argument("--stall-seed", type=int, default=1, metavar="S")
    args = ap.parse_args(argv)
    rows = []
    worst = worst0 = 0.0
    stall = args.stall_pct / 100
    extra = f" {'no-stall %':>10s}" if args.stall_pct else ""
    if args.stall_pct:
        print(f"RTL memory stalls on {args.stall_pct}% of cycles (seed {args.stall_seed}); "
              f"model at the same expected rate (no-stall: the model without it)")
    print(f"{'layer':34s} {'segment':>8s} {'model':>9s} {'RTL':>9s} {'error %':>8s}{extra}")
    todo: list[tuple[str, str, Path]] = [
        (case.name, case.config, _bundle(case)) for case in CORPUS if args.only in case.name]
    todo += [(Path(b).name, "bundle", Path(b)) for b in args.bundle]
    for name, config, bdir in todo:
        rtl = rtl_measure(bdir, run=not args.no_rtl, stall_pct=args.stall_pct,
                          stall_seed=args.stall_seed)
        if rtl is None:
            print(f"{name:34s} (no cached RTL result)")
            continue
        cmp = compare(bdir, rtl, stall)
        cmp0 = compare(bdir, rtl) if args.stall_pct else cmp
        for seg, seg0 in zip(cmp["segments"], cmp0["segments"], strict=True):
            e0 = f" {seg0['error_pct']:+10.2f}" if args.stall_pct else ""
            print(f"{name:34s} {seg['name']:>8s} {seg['model']:9d} {seg['rtl']:9d} "
                  f"{seg['error_pct']:+8.2f}{e0}")
            worst = max(worst, abs(seg["error_pct"]))
            worst0 = max(worst0, abs(seg0["error_pct"]))
            row = {"case": name, "config": config, **seg}
            if args.stall_pct:
                row["no_stall_model"] = seg0["model"]
                row["no_stall_error_pct"] = seg0["error_pct"]
            rows.append(row)
        sys.stdout.flush()
    print(f"max |error| = {worst:.2f} % over {len(rows)} segments")
    rec = {"max_abs_error_pct": worst, "rows": rows}
    out = OUT
    if args.stall_pct:
        print(f"(the no-stall model: max |error| = {worst0:.2f} %)")
        rec.update(stall_pct=args.stall_pct, stall_seed=args.stall_seed,
                   no_stall_max_abs_error_pct=worst0)
        out = OUT.with_name(f"cycle_model_stall{args.stall_pct}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
