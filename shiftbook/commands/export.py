"""`shiftbook export BUNDLE-or-MODEL --qonnx OUT.onnx`: a compiled (or compiled-here) model
written as QONNX, so FINN / hls4ml users can compare flows on the same network."""

from __future__ import annotations

import argparse
import json

from shiftbook.commands import add_force_argument

NAME = "export"
HELP = "write a bundle's (or a model's) integer network as a QONNX model"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="BUNDLE-or-MODEL",
                   help="a program bundle directory (exported from its integer IR), or a "
                        "model as `shiftbook compile` takes it (compiled first)")
    p.add_argument("--qonnx", required=True, metavar="OUT.onnx",
                   help="QONNX file to write (Quant nodes around standard ONNX ops; "
                        "importing it again gives the same bundle)")
    p.add_argument("--config", default=None,
                   help="core config for a model (preset or JSON file; default small)")
    p.add_argument("--calib", type=int, default=None, metavar="N",
                   help="calibration images for a model (as `shiftbook compile`)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of random weights and calibration images for a model (default 0)")
    add_force_argument(p)
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def run(args: argparse.Namespace) -> int:
    from shiftbook import flow

    out = flow.export_qonnx(args.model, args.qonnx, config=args.config, calib=args.calib,
                            seed=args.seed, force=args.force)
    if args.json:
        print(json.dumps({"model": args.model, "qonnx": str(out.resolve())}, sort_keys=True))
    else:
        print(f"qonnx: {out.resolve()}")
    return 0
