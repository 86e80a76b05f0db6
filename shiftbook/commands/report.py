"""`shiftbook report BUNDLE -o DIR [--energy-table YAML]`: report.html + PNG plots +
report.json (cycles, utilization, energy per inference vs int8 MAC and fp32, weight bytes)."""

from __future__ import annotations

import argparse

from shiftbook.commands import add_force_argument

NAME = "report"
HELP = "HTML + PNG + JSON report of a bundle: cycles, utilization, energy, weight bytes"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="program bundle directory (or its manifest.json)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="report directory (replaced as a whole, written atomically; an "
                        "existing directory only if it is a report or empty)")
    add_force_argument(p)
    p.add_argument("--energy-table", default=None, metavar="YAML",
                   help="per-event energy overrides (default: the built-in Horowitz table)")


def run(args: argparse.Namespace) -> int:
    from shiftbook import flow
    from shiftbook.sw.estimate.report import summary_text

    rep = flow.report(args.bundle, args.output, energy_table=args.energy_table,
                      force=args.force)
    rec, comparison = rep.record, rep.comparison
    print(summary_text(rec))
    print()
    print(comparison, end="")
    print(f"report: {args.output}/report.html ({len(rec['plots'])} plots), "
          f"{args.output}/report.json")
    return 0
