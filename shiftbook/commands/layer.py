"""`shiftbook layer`: build a seeded random layer, compile it, run it at a level, compare with
the golden reference."""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

NAME = "layer"
HELP = "compile and run one random conv/linear layer at a level, bit-exact against golden"

LEVELS = ("golden", "functional", "rtl")


class LayerError(ValueError):
    """Bad command-line input for `shiftbook layer`."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    from shiftbook.sw.reference import INPUT_DISTS, WEIGHT_DISTS, WEIGHT_FORMATS

    p.add_argument("--op", default="conv", help="conv or linear (default conv)")
    p.add_argument("--cin", type=int, default=16, help="input channels (default 16)")
    p.add_argument("--cout", type=int, default=32, help="output channels (default 32)")
    p.add_argument("--kernel", type=int, default=3, help="kernel size (default 3)")
    p.add_argument("--stride", type=int, default=1, help="stride (default 1)")
    p.add_argument("--padding", type=int, default=None, help="padding (default kernel//2)")
    p.add_argument("--size", type=int, default=14, help="input height and width (default 14)")
    p.add_argument("--level", default="functional",
                   help=f"one of {', '.join(LEVELS)} (default functional)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--config", default=None,
                   help="core config: a preset (tiny, small, base, small-k2048) or a JSON file "
                        "(default small)")
    p.add_argument("--weights-dist", default="normal",
                   help=f"weights: {', '.join(WEIGHT_DISTS)} (default normal)")
    p.add_argument("--weights", default="shift",
                   help=f"stored weight format: {', '.join(WEIGHT_FORMATS)} (default shift: raw "
                        f"codes; kmeans: scalar codebook, d=1; pq: product-quantized)")
    p.add_argument("--k", type=int, default=None,
                   help="codebook size for kmeans/pq (default 256)")
    p.add_argument("--d", type=int, default=None,
                   help="pq block size (default: KH*KW, 4 for 1x1/linear)")
    p.add_argument("--input-dist", default="normal",
                   help=f"input: {', '.join(INPUT_DISTS)} (default normal)")
    p.add_argument("--no-relu", action="store_true", help="no ReLU after the layer")
    p.add_argument("--residual", action="store_true",
                   help="add the input as a residual operand (needs cin == cout, stride 1)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("-o", "--output", default=None, metavar="BUNDLE_DIR",
                   help="keep the program bundle in this directory")


def _check_args(args: argparse.Namespace) -> None:
    # Callers that build the Namespace by hand may predate the weight-format options.
    for name, default in (("weights", "shift"), ("k", None), ("d", None)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.op not in ("conv", "linear"):
        raise LayerError(f"unknown --op {args.op!r} (conv or linear)")
    if args.level not in LEVELS:
        raise LayerError(f"unknown --level {args.level!r} (one of {', '.join(LEVELS)})")
    for name in ("cin", "cout", "kernel", "stride", "size"):
        v = getattr(args, name)
        if v <= 0:
            raise LayerError(f"--{name} must be a positive integer, not {v}")
    from shiftbook.sw.reference import WEIGHT_FORMATS
    if args.weights not in WEIGHT_FORMATS:
        raise LayerError(f"unknown --weights {args.weights!r} (one of "
                         f"{', '.join(WEIGHT_FORMATS)})")
    if args.weights == "shift" and (args.k is not None or args.d is not None):
        raise LayerError("--k/--d need --weights kmeans or pq")
    if args.weights == "kmeans" and args.d not in (None, 1):
        raise LayerError(f"--weights kmeans is a scalar codebook (d=1), not --d {args.d}")
    for name in ("k", "d"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            raise LayerError(f"--{name} must be a positive integer, not {v}")
    if args.padding is not None and args.padding < 0:
        raise LayerError(f"--padding must be >= 0, not {args.padding}")
    if args.op == "conv":
        pad = args.kernel // 2 if args.padding is None else args.padding
        if args.kernel > args.size + 2 * pad:
            raise LayerError(f"--kernel {args.kernel} is larger than the padded input "
                             f"({args.size} + 2*{pad} = {args.size + 2 * pad})")


def run_layer(args: argparse.Namespace) -> dict[str, Any]:
    """Everything `shiftbook layer` does, returning its JSON record."""
    from shiftbook.config import load_config
    from shiftbook.sim.compare import compare_tensors
    from shiftbook.sim.functional import estimate_cycles, run_program
    from shiftbook.sw.bundle import load_bundle, write_bundle
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer, run_graph

    _check_args(args)
    cfg = load_config(args.config)
    layer = random_layer(args.op, args.cin, args.cout, args.kernel, args.stride, args.padding,
                         args.size, seed=args.seed, exp_bits=cfg.exp_bits,
                         acc_bits=cfg.acc_bits, max_exp=6 if cfg.pe == "mult" else None,
                         weights_dist=args.weights_dist, input_dist=args.input_dist,
                         relu=not args.no_relu, residual=args.residual,
                         weights=args.weights, k=args.k, d=args.d)
    golden = run_graph(layer.graph, layer.inputs)
    prog = compile_graph(layer.graph, cfg, layer.inputs)

    with tempfile.TemporaryDirectory(prefix="shiftbook-layer-") as tmp:
        bdir = Path(args.output) if args.output else Path(tmp) / "bundle"
        write_bundle(prog, layer.graph, bdir)
        bundle = load_bundle(bdir, cfg)
        if args.level == "golden":
            got = run_graph(bundle.graph(), bundle.inputs())
            cycles = estimate_cycles(cfg, bundle.program)
        elif args.level == "functional":
            res = run_program(cfg, bundle.memory)
            got = bundle.read_tensors(res.memory)
            cycles = res.cycles
        else:
            try:
                from shiftbook.sim.rtl.runner import run_bundle
            except ImportError as e:
                raise RuntimeError(f"--level rtl needs shiftbook.sim.rtl.runner ({e})") from None
            res = run_bundle(bdir)
            got = bundle.read_tensors(res.memory)
            cycles = int(res.cycles)
        cmp = compare_tensors(bundle.layers, golden, got)
    lay = prog.layers[0]
    ideal = prog.ideal_cycles
    op = layer.op
    return {
        "bit_exact": cmp.bit_exact,
        "mismatches": cmp.mismatches,
        "cycles": int(cycles),
        # golden/functional: the functional simulator's analytical estimate; rtl: measured.
        "cycles_source": "rtl" if args.level == "rtl" else "estimate",
        "ideal_cycles": int(ideal),
        "cycles_per_ideal": round(cycles / ideal, 4) if ideal else None,
        "level": args.level,
        "op": args.op,
        "input_shape": list(layer.graph.tensors["x"].shape),
        "output_shape": list(layer.graph.tensors["y"].shape),
        "kernel": list(op.kernel),
        "stride": list(op.stride),
        "padding": list(op.padding),
        "seed": args.seed,
        "weights_dist": args.weights_dist,
        "input_dist": args.input_dist,
        "residual": bool(args.residual),
        "config": cfg.name,
        "config_hash": cfg.hash,
        "macs": lay["macs"],
        "instructions": len(prog.insns),
        "weight_bytes": lay["weight_bytes"],
        "weights": args.weights,
        "k": lay["weights"]["k"],
        "d": lay["weights"]["d"],
        "block_layout": lay["weights"]["layout"],
        "weight_footprint": lay["weights"]["footprint"],
        # Bytes of LOAD WGT + LOAD CB (what the layer reads from external memory for its
        # weights) and the int8 bytes of its weights (one byte per weight).
        "weight_bytes_read": lay["weight_bytes_read"],
        "int8_weight_bytes": int(op.weight.size),
        "tiles": {k: lay["tiles"][k] for k in ("groups", "bands", "chunks")},
        "bundle": str(Path(args.output).resolve()) if args.output else None,
        "first_mismatch": cmp.to_dict()["first_mismatch"],
    }


def run(args: argparse.Namespace) -> int:
    rec = run_layer(args)
    if args.json:
        print(json.dumps(rec, sort_keys=True))
    else:
        rows = [
            ("layer", f"{rec['op']} {rec['input_shape']} -> {rec['output_shape']} "
                      f"k={rec['kernel']} s={rec['stride']} p={rec['padding']}"),
            ("config", f"{rec['config']} ({rec['config_hash']})"),
            ("level", rec["level"]),
            ("weights", rec["weights"] + (f" k={rec['k']} d={rec['d']} ({rec['block_layout']})"
                                          if rec["k"] else "")),
            ("weight bytes read", f"{rec['weight_bytes_read']} (int8 weights: "
                                  f"{rec['int8_weight_bytes']})"),
            ("bit-exact", "yes" if rec["bit_exact"] else f"NO ({rec['mismatches']} mismatches)"),
            ("cycles", str(rec["cycles"])),
            ("ideal cycles", str(rec["ideal_cycles"])),
            ("cycles/ideal", str(rec["cycles_per_ideal"])),
            ("instructions", str(rec["instructions"])),
            ("MACs", str(rec["macs"])),
        ]
        if rec["first_mismatch"]:
            m = rec["first_mismatch"]
            rows.append(("first mismatch",
                         f"(c={m['c']}, y={m['y']}, x={m['x']}) expected {m['expected']} got "
                         f"{m['got']} [group {m['group']}, band {m['band']}, tile {m['tile']}]"))
        if rec["bundle"]:
            rows.append(("bundle", rec["bundle"]))
        w = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{w}}  {v}")
    return 0 if rec["bit_exact"] else 1
