"""`shiftbook build --board NAME [--config CFG] -o DIR`: bitstream plus resource report."""

from __future__ import annotations

import argparse
import json
import sys

NAME = "build"
HELP = "build a bitstream for a board (YoWASP Yosys + nextpnr) and report LUT/FF/BRAM/DSP/Fmax"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from shiftbook.boards.targets import DEFAULT_TARGET, TARGETS

    p.add_argument("--board", default=DEFAULT_TARGET, choices=sorted(TARGETS),
                   help=f"target board (default {DEFAULT_TARGET})")
    p.add_argument("--config", default=None,
                   help="CoreConfig preset or JSON file (default: the board's own config)")
    p.add_argument("-o", "--output", required=True, help="build directory")
    p.add_argument("--verilog-only", action="store_true",
                   help="only write the Verilog and constraints (what `shiftbook verilog "
                        "--board` does)")
    p.add_argument("--allow-timing-fail", action="store_true",
                   help="report a missed clock instead of failing")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object (the report; with --verilog-only the "
                        "files written) instead of text; no stage lines")


def run(args: argparse.Namespace) -> int:
    from shiftbook import flow
    from shiftbook.commands import check_output_directory

    check_output_directory(args.output)         # before elaborating the board
    if args.verilog_only:
        files = flow.verilog(args.output, board=args.board, config=args.config)
        if args.json:
            print(json.dumps({"board": args.board, "files": [str(f) for f in files]}))
            return 0
        for f in files:
            print(f)
        return 0
    log = (lambda msg: print(msg, file=sys.stderr)) if not args.json else None
    rep = flow.build(args.board, args.output, config=args.config,
                     allow_timing_fail=args.allow_timing_fail, progress=log)
    if args.json:
        print(rep.to_json(), end="")
    else:
        print(f"report: {args.output}/report.json, {args.output}/report.txt")
    return 0
