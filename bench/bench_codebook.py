"""Codebook weights: external weight traffic and decode throughput per weight format.

For each format (raw shift codes, k-means scalar codebooks, product-quantized codebooks with
the block layouts of issue 3) and a layer it fits, prints

- weight bytes read from external memory (the program's LOAD WGT + LOAD CB, whole bus words,
  every reload counted) / the bytes int8 weights would need (one byte per weight),
- the exact stored footprint (index bits + codebook bits) / int8 bytes,
- cycles of the layer / cycles of the same layer (the same decoded codes) stored as raw
  shift codes (aim <= 1.02: decoding must not cost throughput), and the same without the
  layer's one LOAD CB (``ceil(k*d/bus_bytes)`` words before the first COMPUTE: a per-layer
  transfer, not decoding),

every run bit-exact against the golden reference. ``--level rtl`` (default) measures cycles
in Verilator (one cached build per config); ``--level functional`` uses the functional
simulator's estimate. Writes bench/out/codebook.json.

    .venv/bin/python bench/bench_codebook.py [--level rtl|functional] [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# (name, config, op, cin, cout, kernel, size, weights, k, d): ResNet-18-like layers
CASES = [
    ("conv3x3 64->64 14x14 shift", "small", "conv", 64, 64, 3, 14, "shift", None, None),
    ("conv3x3 64->64 14x14 kmeans k=16", "small", "conv", 64, 64, 3, 14, "kmeans", 16, None),
    ("conv3x3 64->64 14x14 kmeans k=256", "small", "conv", 64, 64, 3, 14, "kmeans", 256,
     None),
    ("conv3x3 64->64 14x14 pq k=256 d=9", "small", "conv", 64, 64, 3, 14, "pq", 256, 9),
    ("conv3x3 64->64 14x14 pq k=256 d=18", "small", "conv", 64, 64, 3, 14, "pq", 256, 18),
    ("conv3x3 64->64 14x14 pq k=2048 d=18", "small-k2048", "conv", 64, 64, 3, 14, "pq", 2048,
     18),
    ("conv3x3 5->11 6x6 pq k=37 d=18 (pad)", "small", "conv", 5, 11, 3, 6, "pq", 37, 18),
    ("conv1x1 128->128 7x7 pq k=256 d=4", "small", "conv", 128, 128, 1, 7, "pq", 256, 4),
    ("conv1x1 128->128 7x7 pq k=256 d=8", "small", "conv", 128, 128, 1, 7, "pq", 256, 8),
    ("linear 512->100 pq k=2048 d=8", "small-k2048", "linear", 512, 100, 1, 1, "pq", 2048, 8),
    ("linear 512->100 kmeans k=256", "small", "linear", 512, 100, 1, 1, "kmeans", 256, None),
]
QUICK = {0, 3, 7}


def measure(level: str, config: str, op: str, cin: int, cout: int, kernel: int, size: int,
            weights: str, k: int | None, d: int | None, seed: int = 0) -> dict[str, Any]:
    """Cycles and weight traffic of a layer in ``weights`` format and of the same layer with
    raw codes (both checked bit-exact against golden)."""
    from shiftbook.config import load_config
    from shiftbook.placement import unpack_tensor
    from shiftbook.sim.compare import compare_tensors
    from shiftbook.sim.functional import run_program
    from shiftbook.sw.bundle import write_bundle
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer, run_graph

    cfg = load_config(config)
    layer = random_layer(op, cin, cout, kernel, size=size, seed=seed, exp_bits=cfg.exp_bits,
                         acc_bits=cfg.acc_bits, weights=weights, k=k, d=d)
    golden = run_graph(layer.graph, layer.inputs)
    fmt = layer.op.weight_format
    rec: dict[str, Any] = {"int8_weight_bytes": int(layer.op.weight.size)}
    with tempfile.TemporaryDirectory(prefix="shiftbook-bench-cb-") as tmp:
        for tag in ("fmt", "raw"):
            if tag == "raw":
                if fmt is None:
                    rec.update({f"raw_{x}": rec[f"fmt_{x}"] for x in
                                ("cycles", "weight_bytes_read", "bit_exact")})
                    break
                layer.op.with_codebook(None)
            prog = compile_graph(layer.graph, cfg, layer.inputs)
            if level == "rtl":
                from shiftbook.sim.rtl.runner import run_bundle
                res = run_bundle(write_bundle(prog, layer.graph, Path(tmp) / tag))
            else:
                res = run_program(cfg, prog.memory)
            got = {n: unpack_tensor(res.memory, p) for n, p in prog.tensors.items()}
            lay = prog.layers[0]
            rec[f"{tag}_cycles"] = int(res.cycles)
            rec[f"{tag}_weight_bytes_read"] = lay.weight_bytes_read
            rec[f"{tag}_bit_exact"] = bool(compare_tensors(prog.layers, golden, got).bit_exact)
            if tag == "fmt":
                rec["footprint"] = lay.weights.footprint
    rec["bit_exact"] = rec["fmt_bit_exact"] and rec["raw_bit_exact"]
    rec["read_per_int8"] = rec["fmt_weight_bytes_read"] / rec["int8_weight_bytes"]
    rec["footprint_per_int8"] = rec["footprint"]["bits"] / 8 / rec["int8_weight_bytes"]
    rec["cycles_per_raw"] = rec["fmt_cycles"] / rec["raw_cycles"]
    # The layer's one LOAD CB (k*d bytes) runs before its first COMPUTE; the rest is decode.
    cb_words = 0 if fmt is None else -(-fmt.k * fmt.d // cfg.bus_bytes)
    rec["codebook_load_cycles"] = 0 if fmt is None else cb_words + 2 + cfg.mem_latency
    rec["cycles_per_raw_excl_cb_load"] = ((rec["fmt_cycles"] - rec["codebook_load_cycles"])
                                          / rec["raw_cycles"])
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--level", default="rtl", choices=("rtl", "functional"))
    ap.add_argument("--quick", action="store_true", help="three representative layers")
    args = ap.parse_args()
    rows = []
    print(f"level {args.level} (cycles: {'RTL' if args.level == 'rtl' else 'estimate'})")
    print(f"{'layer':<38} {'config':<12} {'read/int8':>9} {'store/int8':>10} "
          f"{'cycles':>8} {'raw cyc':>8} {'cyc/raw':>8} {'-CB ld':>7} {'exact':>6} "
          f"{'wall s':>7}")
    for i, (name, config, *case) in enumerate(CASES):
        if args.quick and i not in QUICK:
            continue
        t0 = time.time()
        r = measure(args.level, config, *case)
        wall = time.time() - t0
        r.update({"layer": name, "config": config, "wall_s": round(wall, 1)})
        rows.append(r)
        print(f"{name:<38} {config:<12} {r['read_per_int8']:>9.3f} "
              f"{r['footprint_per_int8']:>10.3f} {r['fmt_cycles']:>8} {r['raw_cycles']:>8} "
              f"{r['cycles_per_raw']:>8.4f} {r['cycles_per_raw_excl_cb_load']:>7.4f} "
              f"{str(r['bit_exact']):>6} {wall:>7.1f}", flush=True)
    for key, what in (("cycles_per_raw", "cycles / raw-code cycles"),
                      ("cycles_per_raw_excl_cb_load", "the same without the LOAD CB")):
        worst = max(r[key] for r in rows)
        print(f"worst {what} = {worst:.4f} (aim <= 1.02): "
              f"{'met' if worst <= 1.02 else 'MISSED'}")
    out = Path(__file__).parent / "out"
    out.mkdir(exist_ok=True)
    (out / "codebook.json").write_text(json.dumps(
        {"level": args.level, "aim_cycles_per_raw": 1.02, "layers": rows}, indent=2) + "\n")
    return 0 if all(r["bit_exact"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
