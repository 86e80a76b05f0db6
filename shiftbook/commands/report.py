"""`shiftbook report BUNDLE -o DIR [--energy-table YAML]`: report.html + PNG plots +
report.json (cycles, utilization, energy per inference vs int8 MAC and fp32, weight bytes)."""

from __future__ import annotations

import argparse
import json

from shiftbook.commands import add_force_argument

NAME = "report"
HELP = "HTML + PNG + JSON report of a bundle: cycles, utilization, energy, weight bytes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="program bundle directory (or its manifest.json)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="report directory (replaced as a whole, written atomically; an "
                        "existing directory only if it is a report or empty)")
    add_force_argument(p)
    p.add_argument("--json", action="store_true",
                   help="print exactly one JSON object (report.json's record) instead of text")
    p.add_argument("--energy-table", default=None, metavar="YAML",
                   help="per-event energy overrides (default: the built-in Horowitz table)")


def check_text_file(path: str, flag: str) -> None:
    """Refuse, naming the file, a table that is not UTF-8 text (a binary file given by
    mistake) before any work; a missing file is left to the reader's own message."""
    from pathlib import Path

    p = Path(path)
    if not p.is_file():
        return
    try:
        p.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError(f"{flag} {path}: not a text (UTF-8 YAML) file") from None


def run(args: argparse.Namespace) -> int:
    from shiftbook import flow
    from shiftbook.sw.estimate.report import summary_text

    if args.energy_table is not None:
        check_text_file(args.energy_table, "--energy-table")
    rep = flow.report(args.bundle, args.output, energy_table=args.energy_table,
                      force=args.force)
    rec, comparison = rep.record, rep.comparison
    if args.json:
        print(json.dumps(rec, sort_keys=True))
        return 0
    print(summary_text(rec))
    print()
    print(comparison, end="")
    print(f"report: {args.output}/report.html ({len(rec['plots'])} plots), "
          f"{args.output}/report.json")
    return 0
