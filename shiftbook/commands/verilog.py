"""`shiftbook verilog`: write the core's Verilog and its config."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

NAME = "verilog"
HELP = "Generate the accelerator core's Verilog (module shiftbook_core) for a CoreConfig."


def add_arguments(p: argparse.ArgumentParser) -> None:
    from shiftbook.config import PRESETS

    p.add_argument("--config", default=None,
                   help=f"a preset name ({', '.join(PRESETS)}) or a CoreConfig JSON file "
                        "(default: small)")
    p.add_argument("--board", default=None,
                   help="write the Verilog of a board target instead (see `shiftbook build`)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output directory (created if missing)")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object (files written, config, hash, lines)")


def run(args: argparse.Namespace) -> int:
    from shiftbook import flow
    from shiftbook.commands import check_output_directory
    from shiftbook.commands.progress import Stage
    from shiftbook.config import load_config

    out = Path(args.output)
    check_output_directory(args.output)         # before elaborating anything
    if args.board:
        with Stage("verilog", f"elaborating board {args.board} and writing its Verilog",
                   enabled=not args.json):
            files = flow.verilog(out, board=args.board, config=args.config)
        if args.json:
            print(json.dumps({"board": args.board, "files": [str(f) for f in files]}))
        else:
            print(f"wrote board {args.board} Verilog to {out}")
        return 0
    cfg = load_config(args.config)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output {str(out)!r} exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create output directory {str(out)!r}: "
                      f"{e.strerror or e}") from None
    if not os.access(out, os.W_OK):
        raise PermissionError(f"output directory {str(out)!r} is not writable")
    with Stage("verilog", f"elaborating the {cfg.rows}x{cfg.cols} core ({cfg.name}) and "
                          f"writing its Verilog", enabled=not args.json):
        core_v, _ = flow.verilog(out, config=cfg)
    lines = len(core_v.read_text().splitlines())
    if args.json:
        print(json.dumps({"files": [str(core_v), str(out / "config.json")], "lines": lines,
                          "config": cfg.name, "config_hash": cfg.hash, "rows": cfg.rows,
                          "cols": cfg.cols, "pe": cfg.pe}))
        return 0
    print(f"wrote {core_v} ({lines} lines, {cfg.rows}x{cfg.cols} {cfg.pe} PEs, config "
          f"{cfg.name} {cfg.hash})")
    return 0
