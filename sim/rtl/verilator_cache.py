"""A content-addressed cache of Verilator + cocotb models, shared by every test and process.

``build/rtl/<key>/`` (or ``$SHIFTBOOK_BUILD_DIR/rtl``): ``key`` hashes every source's text, the
toplevel, the parameters, the options and the tool versions. A lock file serialises concurrent
builds of one key, a marker file (``build.json``) says a build completed, and the least recently
used builds beyond :data:`MAX_BUILDS` are deleted. :func:`run_cocotb` runs a cocotb test module
on such a model.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from shiftbook.sim.rtl.errors import RtlBuildError, RtlRunError
from shiftbook.sim.rtl.sources import sha as _sha
from shiftbook.sim.rtl.sources import tool_version as _version
from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

__all__ = ["build_root", "build_model", "run_cocotb", "VERILATOR_ARGS", "MAKE_ARGS",
           "MAX_BUILDS", "log_tail"]

HERE = Path(__file__).resolve().parent

# Verilator options: warnings in generated code are not our business here (lint is a separate
# check); no --threads (2 shared cores). Verilator's default --x-initial (unique, with the
# default +verilator+rand+reset+0) starts every variable at zero, as the functional
# simulator's memory does. The hot C++ is compiled at -O2 instead of verilated.mk's -Os (the
# usual choice for simulation speed; not measured separately here). gcc needs the PCH option.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style")
MAKE_ARGS = ("CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O2")
# Our main() (sim_main.cpp: cocotb's event loop, a quiet vl_finish, the MARK waveform window)
# replaces cocotb's verilator.cpp; VL_USER_FINISH leaves vl_finish to it.
SIM_MAIN = HERE / "sim_main.cpp"
MAIN_CFLAGS = ("-DVL_USER_FINISH",)
# Complete builds kept under build/rtl (least recently used ones go first); ~10-20 MB each.
MAX_BUILDS = 32
# Build schema: bump when the way a build directory is laid out changes.
SCHEMA = 1
_SCHEMA = SCHEMA


def build_root() -> Path:
    """``$SHIFTBOOK_BUILD_DIR/rtl``, else ``build/rtl`` in the source checkout (or cwd)."""
    env = os.environ.get("SHIFTBOOK_BUILD_DIR")
    if env:
        return Path(env).resolve() / "rtl"
    repo = HERE.parents[1]
    base = repo if (repo / "pyproject.toml").exists() else Path.cwd()
    return base / "build" / "rtl"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _verilator_runner() -> object:
    """cocotb's Verilator runner, adjusted: our warning/trace options, PCH fix for gcc."""
    from cocotb_tools.runner import Verilator

    class _Verilator(Verilator):
        trace_fst = False
        public_depth: int | None = None
        cflags: tuple[str, ...] = ()

        def _build_command(self):  # type: ignore[no-untyped-def]
            cmds = super()._build_command()
            vcmd, mcmd = list(cmds[0]), list(cmds[1])
            if self.public_depth is not None and "--public-flat-rw" in vcmd:
                i = vcmd.index("--public-flat-rw")
                vcmd[i:i + 1] = ["--public-depth", str(self.public_depth)]
            if self.trace_fst:
                vcmd[1:1] = ["--trace-fst", "--trace-structs", *_lz4_flags(self.build_dir)]
            vcmd = [str(SIM_MAIN) if a.endswith("verilator.cpp") else a for a in vcmd]
            for flag in (*MAIN_CFLAGS, *self.cflags):
                vcmd[1:1] = ["-CFLAGS", flag]
            mcmd = [a for a in mcmd if not a.startswith("VM_TRACE=")]
            mcmd += [f"VM_TRACE={int(self.trace_fst)}", *MAKE_ARGS]
            return [vcmd, mcmd]

    return _Verilator()


def _lz4_flags(bdir: Path) -> list[str]:
    """Verilator's FST writer needs <lz4.h> and -llz4. Where only the runtime library
    (liblz4.so.1) is installed, point the compiler at our two-prototype header and the linker
    at a liblz4.so link to the runtime; where neither exists, the build fails with a message."""
    if any(Path(d, "lz4.h").exists() for d in ("/usr/include", "/usr/local/include")):
        return []
    found = [p for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu",
                         "/usr/lib64", "/usr/lib", "/lib/x86_64-linux-gnu")
             for p in sorted(Path(d).glob("liblz4.so*")) if p.exists()]
    if not found:
        raise ToolchainError("FST waveforms need the LZ4 library (apt install liblz4-dev)")
    libdir = bdir / "lz4lib"
    libdir.mkdir(parents=True, exist_ok=True)
    link = libdir / "liblz4.so"
    if not link.exists():
        link.symlink_to(found[0])
    return ["-CFLAGS", f"-I{HERE / 'lz4shim'}", "-LDFLAGS", f"-L{libdir}"]


def build_model(toplevel: str, sources: dict[str, str | Path], *,
                parameters: dict[str, int] | None = None, waves: bool = False,
                public_depth: int | None = None, label: str = "",
                quiet: bool = True, cflags: tuple[str, ...] = ()) -> Path:
    """Build (or reuse) a Verilator + cocotb model; returns its build directory.

    ``sources`` maps a file name to Verilog text (written into the build directory) or to an
    existing file. The build directory ``build/rtl/<key>/`` is content-addressed: ``key``
    hashes every source's text, the toplevel, the parameters, the options and the tool
    versions, so identical designs share one build. Safe to call from several processes at
    once: one builds under a lock, the others wait and reuse its result.

    ``public_depth=None`` lets cocotb reach every signal (``--public-flat-rw``); ``1`` only
    the toplevel's, which lets Verilator optimise the rest (several times faster on big
    designs). ``cflags`` are extra C++ flags of the model and its main (``-DSHIFTBOOK_MARKS``:
    the toplevel has the core's MARK ports, which sim_main.cpp's waveform window reads).
    """
    setup_verilator_env()
    texts = {name: (src.read_text() if isinstance(src, Path) else src)
             for name, src in sources.items()}
    params = dict(parameters or {})
    key = _sha(str(_SCHEMA), toplevel, json.dumps(params, sort_keys=True), str(waves),
               str(public_depth),
               *(f"{n}\0{t}" for n, t in sorted(texts.items())),
               " ".join(VERILATOR_ARGS), " ".join(MAKE_ARGS), " ".join(cflags),
               SIM_MAIN.read_bytes(), " ".join(MAIN_CFLAGS),
               _version("verilator"), _version("cocotb"))[:16]
    root = build_root()
    bdir = root / key
    marker = bdir / "build.json"
    if marker.exists():
        marker.touch()  # recently used: kept by _prune
        return bdir
    with _locked(root / f"{key}.lock"):
        if marker.exists():
            return bdir
        if bdir.exists():
            shutil.rmtree(bdir)  # an interrupted build
        (bdir / "src").mkdir(parents=True)
        t0 = time.monotonic()
        files = []
        for name, text in texts.items():
            f = bdir / "src" / name
            f.write_text(text)
            files.append(f)
        runner = _verilator_runner()
        runner.trace_fst = waves  # type: ignore[attr-defined]
        runner.public_depth = public_depth  # type: ignore[attr-defined]
        runner.cflags = tuple(cflags)  # type: ignore[attr-defined]
        log = bdir / "build.log"
        try:
            runner.build(  # type: ignore[attr-defined]
                sources=files, hdl_toplevel=toplevel, build_dir=bdir, parameters=params,
                build_args=list(VERILATOR_ARGS), timescale=("1ns", "1ps"),
                log_file=log if quiet else None,
            )
        except (RuntimeError, SystemExit) as e:
            tail = log_tail(log)
            raise RtlBuildError(f"Verilator build of {label or toplevel} failed: "
                                f"{tail or e} (log: {log})", log) from None
        if not (bdir / toplevel).exists():
            raise RtlBuildError(f"Verilator build of {label or toplevel} produced no binary "
                                f"(log: {log})", log)
        # intermediate objects are never reused (a changed design is a new directory)
        for pattern in ("*.o", "*.a", "*.gch", "*.d"):
            for f in bdir.glob(pattern):
                f.unlink()
        marker.write_text(json.dumps({
            "toplevel": toplevel, "label": label, "parameters": params, "waves": waves,
            "public_depth": public_depth, "cflags": list(cflags),
            "build_s": round(time.monotonic() - t0, 2),
        }, indent=2) + "\n")
    _prune(root, keep=MAX_BUILDS)
    return bdir


def _prune(root: Path, *, keep: int) -> None:
    """Delete the least recently used complete builds beyond ``keep`` (and their locks)."""
    builds = []
    for marker in root.glob("*/build.json"):
        try:
            if "toplevel" in json.loads(marker.read_text()):
                builds.append((marker.stat().st_mtime, marker.parent))
        except (OSError, ValueError):
            continue
    builds.sort(reverse=True)
    for _, bdir in builds[keep:]:
        shutil.rmtree(bdir, ignore_errors=True)
        (root / f"{bdir.name}.lock").unlink(missing_ok=True)


def _first_failure(log: Path) -> str:
    """The first assertion/exception line of a cocotb log."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    for ln in text:
        s = ln.strip()
        for tag in ("AssertionError", "Error:", "Exception:"):
            if tag in s:
                return s[s.index(tag):][:300]
    return ""


def log_tail(path: Path, lines: int = 1) -> str:
    """The last error-looking line of a log (or its last line)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    # compiler/Verilator errors, a tool missing from PATH (make's "Error 127" cause), make's
    # own failure line: never make's closing "Leaving directory"
    tags = ("%Error", "error:", "No such file or directory", "command not found",
            ": not found", "make: ***")
    errs = [ln.strip() for ln in text if any(t in ln for t in tags)]
    pick = errs[:lines] if errs else [ln.strip() for ln in text[-lines:]]
    return " | ".join(pick)


def run_cocotb(bdir: Path, toplevel: str, test_module: str, *, test_dir: Path,
               plusargs: list[str] | None = None, env: dict[str, str] | None = None,
               waves: bool = False, log_file: Path | None = None,
               pythonpath: list[str | Path] | None = None) -> tuple[int, int]:
    """Run the cocotb tests of ``test_module`` on a model built by :func:`build_model`.

    Returns ``(tests, failed)``; raises :class:`RtlRunError` when the simulator fails or any
    test fails (the message names the log). ``pythonpath`` adds folders where the test
    module can be found (the simulator's Python sees this process's ``sys.path``).
    """
    from cocotb_tools.check_results import get_results

    setup_verilator_env()
    test_dir.mkdir(parents=True, exist_ok=True)
    results = test_dir / "results.xml"
    results.unlink(missing_ok=True)
    runner = _verilator_runner()
    extra = [str(Path(p).resolve()) for p in pythonpath or []]
    added = [p for p in extra if p not in sys.path]
    sys.path[:0] = added
    err = ""
    # cocotb's runner calls sys.exit() when the simulator or (under pytest) a test fails.
    try:
        runner.test(  # type: ignore[attr-defined]
            test_module=test_module, hdl_toplevel=toplevel, hdl_toplevel_lang="verilog",
            build_dir=bdir, test_dir=test_dir, plusargs=list(plusargs or []),
            extra_env=dict(env or {}), waves=waves, results_xml=str(results),
            timescale=("1ns", "1ps"), log_file=log_file,
        )
    except (SystemExit, RuntimeError) as e:
        err = f"exit status {e}"
    finally:
        for p in added:
            sys.path.remove(p)
    where = f" (log: {log_file})" if log_file else ""
    try:
        tests, failed = get_results(results)
    except RuntimeError:
        raise RtlRunError(f"simulation of {toplevel} ({test_module}) wrote no results: "
                          f"{err or 'no results file'}{where}") from None
    if failed or err:
        why = _first_failure(log_file) if log_file else ""
        raise RtlRunError(f"{failed} of {tests} cocotb tests of {toplevel} ({test_module}) "
                          f"failed{', simulator ' + err if err else ''}"
                          f"{': ' + why if why else ''}{where}")
    return tests, failed
