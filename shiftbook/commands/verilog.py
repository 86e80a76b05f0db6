"""`shiftbook verilog`: write the core's Verilog and its config."""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

NAME = "verilog"
HELP = "Generate the accelerator core's Verilog (module shiftbook_core) for a CoreConfig."


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None,
                   help="a preset name (tiny, small, base, small-k2048) or a CoreConfig JSON file "
                        "(default: small)")
    p.add_argument("--board", default=None,
                   help="write the Verilog of a board target instead (see `shiftbook build`)")
    p.add_argument("-o", "--output", required=True, metavar="DIR",
                   help="output directory (created if missing)")


def _atomic_write(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def run(args: argparse.Namespace) -> int:
    from shiftbook.config import load_config

    out = Path(args.output)
    if args.board:
        try:
            from shiftbook.boards.build import board_verilog  # the boards' flow
        except ImportError as e:
            raise RuntimeError(f"board targets are not available ({e})") from None
        board_verilog(args.board, out, config=args.config)
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

    from shiftbook.hw.verilog import generate_verilog

    text = generate_verilog(cfg)
    _atomic_write(out / "shiftbook_core.v", text)
    _atomic_write(out / "config.json", cfg.to_json())
    print(f"wrote {out / 'shiftbook_core.v'} ({len(text.splitlines())} lines, "
          f"{cfg.rows}x{cfg.cols} {cfg.pe} PEs, config {cfg.name} {cfg.hash})")
    return 0
