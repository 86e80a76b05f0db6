"""`shiftbook run BUNDLE --port DEV`: load a bundle onto a board over UART, run, read back."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

NAME = "run"
HELP = "load a program bundle onto a board over its UART link, run it and read the results"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from shiftbook.sw.host import DEFAULT_BAUD

    p.add_argument("bundle", help="program bundle (directory or file from `shiftbook compile`)")
    p.add_argument("--port", required=True, help="serial device of the board, e.g. /dev/ttyUSB0")
    p.add_argument("--baud", type=int, default=DEFAULT_BAUD,
                   help=f"UART rate (default {DEFAULT_BAUD}, the board targets' rate)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the core")
    p.add_argument("-o", "--output", default=None,
                   help="directory for the outputs read back (one .bin per region) and "
                        "run.json")
    p.add_argument("--all", action="store_true",
                   help="also read the whole memory image back (memory.bin in -o DIR)")
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object (cycles, MARKs, output sizes) instead "
                        "of text; no progress lines")


def check_args(args: argparse.Namespace) -> None:
    """Refuse bad options before the board is touched (one-line ValueError naming the option)."""
    from shiftbook.sw.host import DEFAULT_BAUD

    if args.baud <= 0:
        raise ValueError(f"--baud {args.baud} must be a positive rate in bit/s "
                         f"(default {DEFAULT_BAUD})")
    if not args.timeout >= 0:  # also NaN, which would wait forever
        raise ValueError(f"--timeout {args.timeout:g} must be a number of seconds >= 0")
    if args.output:
        out = Path(args.output)
        if out.exists() and not out.is_dir():
            raise ValueError(f"-o {args.output}: exists and is not a directory")
        probe = out.absolute()
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent
        if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
            raise ValueError(f"-o {args.output}: {probe} is not a writable directory")


def run(args: argparse.Namespace) -> int:
    from shiftbook import flow

    check_args(args)
    def note(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    res = flow.run_on_board(args.port, args.bundle, baud=args.baud, timeout=args.timeout,
                            read_all=args.all, progress=None if args.json else note)
    summary = {"cycles": res.cycles, "marks": [{"id": i, "cycles": c} for i, c in res.marks],
               "outputs": {k: len(v) for k, v in res.outputs.items()}}
    if args.output:
        out = Path(args.output)
        out.mkdir(parents=True, exist_ok=True)
        for name, blob in res.outputs.items():
            (out / f"{name}.bin").write_bytes(blob)
        if res.memory is not None:
            (out / "memory.bin").write_bytes(res.memory)
        (out / "run.json").write_text(json.dumps(summary, indent=2) + "\n")
    if args.json:
        print(json.dumps(summary, sort_keys=True))
        return 0
    print(f"{summary['cycles']} cycles on the board, {len(summary['marks'])} MARK(s)")
    for m in summary["marks"]:
        print(f"  mark {m['id']:>4}  at cycle {m['cycles']}")
    for name, size in summary["outputs"].items():
        print(f"output {name}: {size} bytes")
    if args.output:
        print(f"wrote {args.output}/run.json and one .bin per output")
    return 0
