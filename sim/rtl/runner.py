"""Build the generated core under Verilator (once per configuration) and run programs on it.

Models live in the content-addressed cache of :mod:`.verilator_cache`; the core's Verilog
comes from a :class:`~.sources.CoreSource`. An alias per (CoreConfig, gateware sources) avoids
even regenerating the core's Verilog while ``hw/`` is unchanged.

A run loads an external memory image (word 0 = the first instruction), pulses ``start``, lets
Verilator run until the core raises ``done`` (or ``error``, or touches memory outside the
simulated array, or a cycle limit passes), then dumps the memory image back. Python takes part
only at those few points (see ``cocotb_core.py``), so runs go at Verilator speed.

Public entry points: :func:`run_bundle`, :func:`run_image`, :func:`build`.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from shiftbook.config import CoreConfig
from shiftbook.sim.rtl.errors import RtlBuildError, RtlError, RtlRunError, RtlTimeoutError
from shiftbook.sim.rtl.hexio import read_hex as _read_hex
from shiftbook.sim.rtl.hexio import read_marks as _read_marks
from shiftbook.sim.rtl.hexio import write_hex as _write_hex
from shiftbook.sim.rtl.sources import CoreSource, amaranth_core, verilog_core
from shiftbook.sim.rtl.sources import sha as _sha
from shiftbook.sim.rtl.sources import tool_version as _version
from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env
from shiftbook.sim.rtl.verilator_cache import (
    MAIN_CFLAGS,
    MAKE_ARGS,
    SIM_MAIN,
    VERILATOR_ARGS,
    build_model,
    build_root,
    run_cocotb,
)
from shiftbook.sim.rtl.verilator_cache import SCHEMA as _SCHEMA
from shiftbook.sim.rtl.verilator_cache import log_tail as _tail

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
# cocotb reaches only sim_top's ports (the harness never looks inside the core), so Verilator
# may optimise the core's internals.
PUBLIC_DEPTH = 1
# sim_main.cpp reads sim_top's MARK ports for the waveform window.
CFLAGS = ("-DSHIFTBOOK_MARKS",)


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
    waves_window:
        With a MARK window (``waves_marks``): ``(from_time, to_time, from_cycle, to_cycle)``
        of the traced steps (simulator time in ps, the core's cycle counter), else None.
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
    waves_window: tuple[int, int, int, int] | None = None
    build_dir: Path | None = field(default=None, repr=False)

    @property
    def cycles_per_s(self) -> float:
        """Simulation speed: cycles per wall-clock second from start to done."""
        return self.cycles / self.sim_wall_s if self.sim_wall_s > 0 else 0.0

    @property
    def cycles_per_cpu_s(self) -> float:
        """Simulation speed: cycles per CPU second of the simulator from start to done."""
        return self.cycles / self.sim_cpu_s if self.sim_cpu_s > 0 else 0.0


def sim_words(cfg: CoreConfig) -> int:
    """Words of the simulated external memory: ``mem_words`` clipped to SIM_MAX_BYTES."""
    return min(cfg.mem_words, SIM_MAX_BYTES // cfg.bus_bytes)


def _harness_key(cfg: CoreConfig, core: CoreSource, waves: bool) -> str:
    """What determines a core build, without generating the core's Verilog."""
    return _sha(
        str(_SCHEMA), cfg.hash, core.name, core.key, str(waves), str(sim_words(cfg)),
        str(PUBLIC_DEPTH), " ".join(CFLAGS),
        *(p.read_bytes() for p in HARNESS_SOURCES), SIM_MAIN.read_bytes(), " ".join(MAIN_CFLAGS),
        " ".join(VERILATOR_ARGS), " ".join(MAKE_ARGS),
        _version("verilator"), _version("cocotb"),
    )[:16]


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
        quiet=quiet, cflags=CFLAGS,
    )
    if core.name == "amaranth" and _harness_key(cfg, amaranth_core(), waves) != hkey:
        return bdir  # the gateware changed while we generated: do not record a stale alias
    alias.parent.mkdir(parents=True, exist_ok=True)
    tmp = alias.with_suffix(f".{os.getpid()}")
    tmp.write_text(bdir.name + "\n")
    tmp.replace(alias)
    return bdir


# ---------------------------------------------------------------- runs
def run_image(cfg: CoreConfig, image: bytes, *, core: CoreSource | None = None,
              waves: bool = False, stall_seed: int | None = None, stall_pct: int = 25,
              timeout_cycles: int | None = None, progress: bool = False,
              keep: bool = False, run_dir: str | Path | None = None,
              waves_marks: tuple[int | None, int | None] | None = None) -> RtlResult:
    """Run the external memory image ``image`` (program at word 0) on the core for ``cfg``.

    Parameters
    ----------
    core:
        Where the core's Verilog comes from; default the real one (:func:`amaranth_core`).
    waves:
        Record an FST waveform (a separate, slower build); keeps the run directory.
    waves_marks:
        ``(after, until)``: write only the time steps after the first MARK ``after`` (None:
        from the start) up to the first MARK ``until`` (None: to the end) into the FST.
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
                    stall_pct=stall_pct, timeout=timeout, progress=progress, keep=keep,
                    waves_marks=waves_marks)
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
         keep: bool, waves_marks: tuple[int | None, int | None] | None = None) -> RtlResult:
    bus = cfg.bus_bytes
    img_hex, dump_hex = rdir / "image.hex", rdir / "dump.hex"
    marks_file, result_file, log = rdir / "marks.txt", rdir / "result.json", rdir / "sim.log"
    window_file = rdir / "waves_window.txt"
    for p in (dump_hex, marks_file, result_file, window_file, rdir / "dump.fst"):
        p.unlink(missing_ok=True)
    image_words = _write_hex(img_hex, image, bus) if image else 0
    plusargs = [f"+image_words={image_words}", f"+dump_file={dump_hex}",
                f"+marks_file={marks_file}"]
    if image:
        plusargs.append(f"+image={img_hex}")
    if stall_seed:
        plusargs += [f"+stall_seed={stall_seed}", f"+stall_pct={stall_pct}"]
    if waves and waves_marks is not None:
        after, until = waves_marks
        plusargs += [f"+waves_from_mark={-1 if after is None else int(after)}",
                     f"+waves_to_mark={-1 if until is None else int(until)}",
                     f"+waves_window={window_file}"]
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
    window = None
    if window_file.exists():
        window = tuple(int(v) for v in window_file.read_text().split()[:4])
    result = RtlResult(
        memory=memory, cycles=res["run_cycles"], marks=marks, wall_s=wall,
        sim_wall_s=res["sim_wall_s"], sim_cpu_s=res.get("sim_cpu_s", 0.0),
        core_cycles=res["core_cycles"],
        mem_reads=res["mem_reads"], mem_writes=res["mem_writes"], status=res["status"],
        run_dir=rdir if keep else None, waves=fst if waves and fst.exists() else None,
        waves_window=window,  # type: ignore[arg-type]
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
    """(config, memory image) of a bundle: a loaded ``sw.bundle.Bundle`` or a bundle directory
    (or its manifest.json), read and validated by ``sw.bundle.load_bundle`` -- the one bundle
    reader. A raw memory image without a bundle runs through :func:`run_image`."""
    from shiftbook.sw.bundle import Bundle, load_bundle

    if isinstance(bundle, Bundle):
        cfg, image = bundle.config, bytes(bundle.memory)
        if config is not None and config.hash != cfg.hash:
            raise RtlError(f"bundle was compiled for config {cfg.name} ({cfg.hash}), not "
                           f"{config.name} ({config.hash})")
        return cfg, image
    path = Path(bundle)  # type: ignore[arg-type]
    b = load_bundle(path.parent if path.is_file() else path, config)
    return b.config, b.memory


def run_bundle(bundle: str | Path | object, *, waves: bool = False,
               stall_seed: int | None = None, timeout_cycles: int | None = None,
               core: CoreSource | None = None, progress: bool = False, keep: bool = False,
               config: CoreConfig | None = None) -> RtlResult:
    """Run a program bundle on the core of its config.

    ``bundle`` is a bundle directory (validated by ``sw.bundle.load_bundle``) or a loaded
    ``sw.bundle.Bundle``. ``config``, if given, is the
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

