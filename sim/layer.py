"""One random layer compiled and run at a level, compared with the golden reference.

The library side of ``shiftbook layer`` (the command only parses its options and prints):
:func:`run_layer` takes the options as a :class:`LayerSpec` (or the command's parsed
arguments) and returns the command's JSON record. Cycles come from the RTL at
``level="rtl"``, else from the exact cycle model (``shiftbook.timing``), which equals the
RTL's count.
"""

from __future__ import annotations

import argparse
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftbook.outputs import check_output_dir

__all__ = ["LEVELS", "LayerError", "LayerSpec", "run_layer"]

LEVELS = ("golden", "functional", "rtl")


@dataclass
class LayerSpec:
    """The options of `shiftbook layer` (same names and defaults, ``-`` -> ``_``): one random
    conv or linear layer, its weights and inputs, the level to run it at, the core config and
    an optional bundle directory to keep."""

    op: str = "conv"
    cin: int = 16
    cout: int = 32
    kernel: int = 3
    stride: int = 1
    padding: int | None = None
    size: int = 14
    level: str = "functional"
    seed: int = 0
    config: str | None = None
    weights_dist: str = "normal"
    weights: str = "shift"
    k: int | None = None
    d: int | None = None
    input_dist: str = "normal"
    no_relu: bool = False
    residual: bool = False
    output: str | None = None
    force: bool = False


class LayerError(ValueError):
    """Bad command-line input for `shiftbook layer`."""


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
    if args.weights in ("shift", "two-term") and (args.k is not None or args.d is not None):
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


def _mult_max_exp(weights: str) -> int:
    """The largest exponent whose values fit the multiplier PE's int8 weights (a two-term
    weight may sum two terms of that exponent)."""
    return 5 if weights == "two-term" else 6


def run_layer(args: LayerSpec | argparse.Namespace) -> dict[str, Any]:
    """Everything `shiftbook layer` does, returning its JSON record."""
    from shiftbook.config import load_config
    from shiftbook.sim.compare import compare_tensors
    from shiftbook.sw.bundle import load_bundle, write_bundle
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer, run_graph

    _check_args(args)
    if args.output:
        check_output_dir(args.output, "bundle", force=getattr(args, "force", False))
    cfg = load_config(args.config)
    layer = random_layer(args.op, args.cin, args.cout, args.kernel, args.stride, args.padding,
                         args.size, seed=args.seed, exp_bits=cfg.exp_bits,
                         acc_bits=cfg.acc_bits, max_exp=_mult_max_exp(args.weights)
                         if cfg.pe == "mult" else None,
                         weights_dist=args.weights_dist, input_dist=args.input_dist,
                         relu=not args.no_relu, residual=args.residual,
                         weights=args.weights, k=args.k, d=args.d)
    golden = run_graph(layer.graph, layer.inputs)
    prog = compile_graph(layer.graph, cfg, layer.inputs)

    with tempfile.TemporaryDirectory(prefix="shiftbook-layer-") as tmp:
        bdir = Path(args.output) if args.output else Path(tmp) / "bundle"
        write_bundle(prog, layer.graph, bdir, force=getattr(args, "force", False))
        bundle = load_bundle(bdir, cfg)
        got, cycles = _run_at_level(args.level, cfg, bundle, bdir)
        cmp = compare_tensors(bundle.layers, golden, got)
    return _layer_record(args, cfg, layer, prog, cmp, cycles)


def _run_at_level(level: str, cfg: Any, bundle: Any, bdir: Path
                  ) -> tuple[dict[str, Any], int]:
    """Run the written bundle at ``level``: its tensors and its cycle count (measured at
    ``rtl``, else the exact cycle model, which equals the RTL's)."""
    from shiftbook.sim.functional import run_program
    from shiftbook.sw.reference import run_graph
    from shiftbook.timing import estimate_program

    if level == "golden":
        got = run_graph(bundle.graph(), bundle.inputs())
        cycles = estimate_program(cfg, bundle.program).total    # the exact cycle model
    elif level == "functional":
        res = run_program(cfg, bundle.memory)
        got = bundle.read_tensors(res.memory)
        cycles = estimate_program(cfg, bundle.program).total    # the exact cycle model
    else:
        try:
            from shiftbook.sim.rtl.runner import run_bundle
        except ImportError as e:
            raise RuntimeError(f"--level rtl needs shiftbook.sim.rtl.runner ({e})") from None
        res = run_bundle(bdir)
        got = bundle.read_tensors(res.memory)
        cycles = int(res.cycles)
    return got, cycles


def _layer_record(args: argparse.Namespace, cfg: Any, layer: Any, prog: Any, cmp: Any,
                  cycles: int) -> dict[str, Any]:
    """The JSON record of `shiftbook layer`: the comparison, cycles, the layer's shape and
    options, and its compiled weight format and traffic."""
    lay = prog.layers[0]
    ideal = prog.ideal_cycles
    op = layer.op
    return {
        "bit_exact": cmp.bit_exact,
        "mismatches": cmp.mismatches,
        "cycles": int(cycles),
        # golden/functional: the exact cycle model (equal to RTL); rtl: measured.
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
        "macs": lay.macs,
        "instructions": len(prog.insns),
        "weight_bytes": lay.weight_bytes,
        "weights": args.weights,
        "k": lay.weights.k,
        "d": lay.weights.d,
        "block_layout": lay.weights.layout,
        "weight_footprint": lay.weights.footprint,
        # Bytes of LOAD WGT + LOAD CB (what the layer reads from external memory for its
        # weights) and the int8 bytes of its weights (one byte per weight).
        "weight_bytes_read": lay.weight_bytes_read,
        "int8_weight_bytes": int(op.weight.size),
        "tiles": {"groups": lay.tiles.groups, "bands": [list(b) for b in lay.tiles.bands],
                  "chunks": [list(c) for c in lay.tiles.chunks]},
        "bundle": str(Path(args.output).resolve()) if args.output else None,
        "first_mismatch": cmp.to_dict()["first_mismatch"],
    }
