"""The `shiftbook` command line.

Each subcommand lives in its own module under ``shiftbook/commands/`` exposing
``NAME``, ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. Errors a user can act on
are exceptions derived from ``ValueError``/``RuntimeError``/``OSError`` (ConfigError,
NumericsError, BundleError, ToolchainError, ...): they become one line on stderr and exit 2.
Set SHIFTBOOK_TRACEBACK=1 to see the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Order is the order of `shiftbook --help`.
COMMANDS = [
    "verilog", "layer", "compile", "simulate", "compress", "build", "estimate", "report", "run",
]


def _load_commands() -> list:
    mods = []
    for name in COMMANDS:
        try:
            mods.append(importlib.import_module(f"shiftbook.commands.{name}"))
        except ModuleNotFoundError as e:
            if e.name != f"shiftbook.commands.{name}":
                raise
    return mods


def build_parser() -> argparse.ArgumentParser:
    from shiftbook import __version__

    p = argparse.ArgumentParser(
        prog="shiftbook",
        description="Compressed CNNs to multiplier-free shift-accumulate hardware, "
                    "checked bit-exactly from PyTorch to RTL.",
    )
    p.add_argument("--version", action="version", version=f"shiftbook {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for mod in _load_commands():
        sp = sub.add_parser(mod.NAME, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(sp)
        sp.set_defaults(_run=mod.run)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("shiftbook: interrupted", file=sys.stderr)
        return 130
    except (ValueError, RuntimeError, OSError, KeyError) as e:
        if os.environ.get("SHIFTBOOK_TRACEBACK"):
            raise
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"shiftbook {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
