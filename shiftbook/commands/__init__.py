"""Subcommands of the `shiftbook` CLI (one module each)."""

from __future__ import annotations

import argparse


def add_force_argument(p: argparse.ArgumentParser) -> None:
    """``--force``: replace what is at ``-o`` even if shiftbook did not write it."""
    p.add_argument("--force", action="store_true",
                   help="replace the output path even if it holds files shiftbook did not "
                        "write (by default only an earlier output of the same kind, or an "
                        "empty directory, is replaced)")
