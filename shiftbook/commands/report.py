"""`shiftbook report BUNDLE -o DIR [--run RUN] [--build DIR] [--compression JSON]
[--energy-table YAML]`: report.html + SVG plots + report.json (per-layer formats, cycles,
bit-exact status and bytes by memory level, energy by source, roofline, resources, the
compression summary)."""

from __future__ import annotations

import argparse
import json

from shiftbook.commands import add_force_argument

NAME = "report"
HELP = ("HTML + SVG + JSON report of a bundle: per-layer cycles, formats, bytes, energy, "
        "roofline")


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
    p.add_argument("--run", default=None, metavar="RUN",
                   help="an RTL run of the bundle for the RTL cycles and bit-exact columns: "
                        "the output of `shiftbook simulate --level rtl --json` saved to a "
                        "file, or a `shiftbook run -o` directory (or its run.json)")
    p.add_argument("--build", default=None, metavar="DIR",
                   help="a `shiftbook build` output directory (its report.json): resources "
                        "and Fmax")
    p.add_argument("--compression", default=None, metavar="JSON",
                   help="the summary `shiftbook compress --json FILE` wrote for the model: "
                        "sizes and accuracy")


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
                      force=args.force, run=args.run, build=args.build,
                      compression=args.compression)
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
