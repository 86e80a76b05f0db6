"""Subcommands of the `shiftbook` CLI (one module each)."""

from __future__ import annotations

import argparse


def add_force_argument(p: argparse.ArgumentParser) -> None:
    """``--force``: replace what is at ``-o`` even if shiftbook did not write it."""
    p.add_argument("--force", action="store_true",
                   help="replace the output path even if it holds files shiftbook did not "
                        "write (by default only an earlier output of the same kind, or an "
                        "empty directory, is replaced)")


def check_output_directory(path: str, flag: str = "-o") -> None:
    """Refuse an output directory that cannot be made or written, before any work: ``path``
    exists and is not a directory, or its nearest existing ancestor is a file or read-only.
    (For commands that write into a directory, e.g. ``verilog``, ``build``, ``--dump-dir``.)"""
    import os
    from pathlib import Path

    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{flag} {path}: exists and is not a directory")
    probe = p.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise NotADirectoryError(f"{flag} {path}: {probe} is a file, not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"{flag} {path}: directory {probe} is not writable")
