"""Waveforms of one layer: an FST limited to the layer's MARK window, and a GTKWave save file.

A layer's window runs from the MARK of the layer before it (the start of the run for the first
layer) to its own MARK; the traced model (``waves=True``, cached like the untraced one) writes
only those time steps (``sim_main.cpp``). Next to ``<layer>.fst`` goes ``<layer>.gtkw``, a
GTKWave save file that opens the FST with the controller, DMA and PE array signals listed
(Surfer reads the FST too). :func:`fst_header` reads an FST's header block (start and end
time, timescale) without any FST library, for checks and tests.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shiftbook.sim.rtl.errors import RtlError

__all__ = ["FstHeader", "fst_header", "layer_window", "write_layer_waves", "write_gtkw",
           "core_signals", "CLOCK_PERIOD_PS"]

#: One clock period of the cocotb clock in simulator time units (ps; cocotb_core.py's 10 ns).
CLOCK_PERIOD_PS = 10_000

_FST_BL_HDR = 0


@dataclass(frozen=True)
class FstHeader:
    """The header block of an FST file: first and last dumped time, timescale (10**exp s)."""

    start_time: int
    end_time: int
    timescale_exp: int
    scopes: int
    vars: int
    value_change_blocks: int
    writer: str


def fst_header(path: str | Path) -> FstHeader:
    """Parse the header block (block type 0, big-endian fields) at the start of an FST file;
    raises :class:`RtlError` if the file is not an FST."""
    data = Path(path).read_bytes()[:512]
    if len(data) < 9 + 8 * 8 + 1 + 128 or data[0] != _FST_BL_HDR:
        raise RtlError(f"{path}: not an FST file (no header block)")
    (length,) = struct.unpack(">Q", data[1:9])
    start, end = struct.unpack(">QQ", data[9:25])
    # e in the writer's native byte order: tells a reader the writer's endianness
    if not any(abs(struct.unpack(f"{o}d", data[25:33])[0] - math.e) < 1e-12 for o in "<>"):
        raise RtlError(f"{path}: not an FST file (no endianness test value in its header)")
    _mem, scopes, _hvars, nvars, vcblocks = struct.unpack(">5Q", data[33:73])
    (tscale,) = struct.unpack(">b", data[73:74])
    writer = data[74:74 + 128].split(b"\0", 1)[0].decode("ascii", "replace")
    if length < 74:
        raise RtlError(f"{path}: FST header block too short ({length} bytes)")
    return FstHeader(start, end, tscale, scopes, nvars, vcblocks, writer)


def layer_window(marks: list[tuple[int, int]], layer_mark: int) -> tuple[int | None, int]:
    """``(after, until)`` MARK ids of a layer's window from a run's MARK log: the MARK before
    ``layer_mark`` in run order (None for the first) and ``layer_mark`` itself."""
    ids = [int(m) for m, _ in marks]
    if layer_mark not in ids:
        raise RtlError(f"MARK {layer_mark} never appeared in the run (MARKs seen: "
                       f"{', '.join(map(str, ids)) or 'none'})")
    i = ids.index(layer_mark)
    return (ids[i - 1] if i > 0 else None), layer_mark


# Groups of the save file: (title, module of the core's Verilog, most ports listed).
_GROUPS = (("controller", "controller", 32), ("DMA", "dma", 24),
           ("PE array", "compute.array", 24), ("PE 0,0", "compute.array.pe_0_0", 16),
           ("PE 0,1", "compute.array.pe_0_1", 16))
_HARNESS = ("clk", "rst", "start", "busy", "done", "error", "mark_valid", "mark_id", "cycles",
            "run_cycles", "cmd_valid", "cmd_ready", "cmd_addr", "cmd_we", "rsp_valid")
_TOP = "TOP.shiftbook_sim_top"
_MODULE = re.compile(r"^module \\shiftbook_core\.([A-Za-z0-9_.]+) \(([^)]*)\)", re.M)


def core_signals(verilog: str) -> dict[str, list[str]]:
    """Ports of each submodule of the core's generated Verilog (``controller``, ``dma``,
    ``compute.array.pe_0_0``, ...) as FST names under ``TOP.shiftbook_sim_top.core``."""
    out: dict[str, list[str]] = {}
    for m in _MODULE.finditer(verilog):
        ports = [p.strip() for p in m.group(2).split(",")]
        out[m.group(1)] = [f"{_TOP}.core.{m.group(1)}.{p}" for p in sorted(ports)
                           if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p)]
    return out


def write_gtkw(fst: Path, out: Path, *, verilog: str = "") -> Path:
    """A GTKWave save file for ``fst``: the harness ports, then the controller, DMA and PE
    array ports found in the core's Verilog (``verilog``), one comment line per group."""
    lines = [f'[dumpfile] "{fst.resolve()}"', "[timestart] 0", "-harness",
             *(f"{_TOP}.{s}" for s in _HARNESS)]
    mods = core_signals(verilog)
    for title, mod, most in _GROUPS:
        if mods.get(mod):
            lines += [f"-{title}", *mods[mod][:most]]
    out.write_text("\n".join(lines) + "\n")
    return out


def write_layer_waves(cfg: Any, memory: bytes, layer: Any | None, out_dir: str | Path, *,
                      marks: list[tuple[int, int]] | None = None,
                      timeout_cycles: int | None = None) -> dict[str, Any]:
    """Run ``memory`` on the traced core of ``cfg`` with the FST limited to ``layer``'s MARK
    window (its MARK id is its index; ``marks`` from an earlier run of the same image, else the
    window starts at the MARK with the id before it; ``layer=None``: the whole run, as
    ``run.fst``). Writes ``OUT/<layer>.fst``, ``<layer>.gtkw`` and ``<layer>.json`` (window in
    time and cycles); returns that record."""
    from shiftbook.sim.rtl.runner import run_image

    mark: int | None = None
    after: int | None = None
    if layer is not None:
        mark = int(getattr(layer, "mark", layer.index))
        if marks:
            after, _ = layer_window(marks, mark)
        else:
            after = mark - 1 if mark > 0 else None
    until = mark
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res = run_image(cfg, memory, waves=True, waves_marks=(after, until),
                    timeout_cycles=timeout_cycles)
    try:
        if res.waves is None or res.waves_window is None:
            what = f"layer {layer.name}" if layer is not None else "the bundle"
            raise RtlError(f"the traced run of {what} wrote no waveform "
                           f"(MARK window {after} -> {until} never opened)")
        stem = re.sub(r"[^A-Za-z0-9_.-]", "_", layer.name) if layer is not None else "run"
        fst = out / f"{stem}.fst"
        shutil.copyfile(res.waves, fst)
        src = (res.build_dir / "src" / "shiftbook_core.v") if res.build_dir else None
        verilog = src.read_text() if src is not None and src.exists() else ""
        gtkw = write_gtkw(fst, out / f"{stem}.gtkw", verilog=verilog)
        t0, t1, c0, c1 = res.waves_window
        rec = {"layer": layer.name if layer is not None else None,
               "index": int(layer.index) if layer is not None else None, "mark": mark,
               "after_mark": after, "fst": str(fst), "gtkw": str(gtkw),
               "from_time_ps": t0, "to_time_ps": t1, "from_cycle": c0, "to_cycle": c1,
               "marks": [list(m) for m in res.marks]}
        (out / f"{stem}.json").write_text(json.dumps(rec, indent=2) + "\n")
        return rec
    finally:
        if res.run_dir is not None:
            shutil.rmtree(res.run_dir, ignore_errors=True)
