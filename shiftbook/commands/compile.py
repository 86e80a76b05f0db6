"""`shiftbook compile`: a model (built-in name, .pt2, `shiftbook compress` output) -> bundle."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from shiftbook import flow
from shiftbook.commands import add_force_argument
from shiftbook.manifest import LayerMeta
from shiftbook.sw.flow_compile import CompileError, calibration_source

__all__ = ["CompileArgsError", "add_arguments", "calibration_source",
           "run", "summary"]

NAME = "compile"
HELP = "lower a model to the integer IR, compile it for a core and write a program bundle"


# Bad command-line input for `shiftbook compile`: the library's error (sw/flow_compile.py).
CompileArgsError = CompileError


def add_arguments(p: argparse.ArgumentParser) -> None:
    from shiftbook.config import PRESETS

    p.add_argument("model", metavar="MODEL",
                   help="built-in model name (resnet8, resnet20, ...), a .pt2 file "
                        "(torch.export.save), a .onnx file (plain ONNX or QONNX) or a "
                        "`shiftbook compress` output")
    p.add_argument("--config", default=None,
                   help=f"core config: a preset ({', '.join(PRESETS)}) or a JSON file "
                        "(default small)")
    p.add_argument("--calib", type=int, default=None, metavar="N",
                   help="number of calibration images (default 32): the digits training set "
                        "for a 1-channel 32x32 model, else seeded standard-normal images")
    p.add_argument("--weights", default=None, metavar="CKPT",
                   help="float checkpoint for a built-in model (default: seeded random weights)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of random weights and random calibration images (default 0)")
    p.add_argument("-o", "--output", required=True, metavar="BUNDLE",
                   help="bundle directory to write (replaced atomically; an existing "
                        "directory only if it is a bundle or empty)")
    p.add_argument("--max-adapt-error", type=float, default=None, metavar="E",
                   help="largest relative output error a layer may get from being fitted to "
                        "the config's accumulator (weight scale lowered; default 0.25, "
                        "docs/frontend.md); beyond it the compile fails naming the layer")
    p.add_argument("--calib-cache", default=None, metavar="DIR",
                   help="directory caching the quantized network, keyed by model, calibration "
                        "images, config and quantizer code: a repeated compile skips "
                        "calibration (default: no cache)")
    add_force_argument(p)
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def _fmt(lay: LayerMeta) -> str:
    if lay.op not in ("conv2d", "linear"):
        return "-"
    if lay.weights.is_codebook:
        return f"codebook k={lay.weights.k} d={lay.weights.d}"
    return "shift"


def summary(low: Any, prog: Any) -> list[dict[str, Any]]:
    """One row per compiled layer: name, op, output shape, weight format, MACs, ideal cycles."""
    rows = []
    for lay in prog.layers:
        t = low.graph.tensors[lay.output]
        rows.append({"index": lay.index, "name": lay.name, "op": lay.op,
                     "input_shape": list(low.graph.tensors[lay.input].shape),
                     "shape": list(t.shape), "format": _fmt(lay), "macs": lay.macs,
                     "ideal_cycles": lay.ideal_cycles, "residual": lay.residual})
    return rows


def run(args: argparse.Namespace) -> int:
    from shiftbook.commands.progress import Stage
    from shiftbook.sw.frontend.adaptation import adaptation_lines

    # flow.compile checks the output path, the seed, the calibration count and the
    # adaptation limit before any work.
    with Stage("compile", f"lowering, calibrating and compiling {args.model}",
               enabled=not args.json) as stage:
        def progress(done: int, total: int, layer: str) -> None:
            stage.detail = f"quantized {done}/{total} layers ({layer})"

        c = flow.compile(args.model, config=args.config, calib=args.calib,
                         weights=args.weights, seed=args.seed,
                         max_adapt_error=args.max_adapt_error, output=args.output,
                         force=args.force, progress=progress, calib_cache=args.calib_cache)
    low, prog, cfg, info, out = c.lowered, c.program, c.config, c.info, c.bundle
    rows = summary(low, prog)
    rec = {**info, "bundle": str(Path(out).resolve()), "config": cfg.name,
           "config_hash": cfg.hash, "instructions": len(prog.insns),
           "memory_bytes": len(prog.memory), "macs": sum(r["macs"] for r in rows),
           "ideal_cycles": prog.ideal_cycles, "layers": rows,
           "notes": list(getattr(low, "notes", [])),
           "adapted": adaptation_lines(low.layers, cfg.acc_bits)}
    if args.json:
        print(json.dumps(rec, sort_keys=True))
        return 0
    hdr = ("#", "layer", "op", "output", "format", "MACs", "ideal cycles")
    table = [hdr] + [(str(r["index"]), r["name"], r["op"] + (" +res" if r["residual"] else ""),
                      "x".join(map(str, r["shape"])), r["format"], str(r["macs"]),
                      str(r["ideal_cycles"])) for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(hdr))]
    for row in table:
        print("  ".join(c.rjust(w) if i in (0, 5, 6) else c.ljust(w)
                        for i, (c, w) in enumerate(zip(row, widths, strict=True))).rstrip())
    print(f"total: {len(rows)} layer(s), {rec['macs']} MACs, {rec['ideal_cycles']} ideal "
          f"cycles on {cfg.name} ({cfg.rows}x{cfg.cols} PEs), {rec['instructions']} "
          f"instructions, {rec['memory_bytes']} bytes of memory image")
    for note in rec["notes"]:
        print(f"note: {note}")
    for line in rec["adapted"]:
        print(f"adapted: {line}")
    cached = f" (calibration cache: {info['calib_cache']})" if "calib_cache" in info else ""
    print(f"calibration: {info['calib_images']} {info['calibration']} image(s){cached}; "
          f"bundle: {rec['bundle']}")
    return 0
