"""Fuzz every reader of outside data for a fixed time each (issue 19, tests/fuzz/targets.py).

Targets: the bundle loader, the CoreConfig loader, the UART host link's reply parsing and
the ``.pt2`` and ONNX model readers. Each runs for ``--minutes`` (default 10) in batches of
hypothesis examples with fresh random seeds; an input must either load or get the project's one-line
error (``targets.outcome``). Prints, per target, the inputs tried, the crashes (must be 0)
and the slowest input; writes ``bench/out/fuzz.json``. Exit status 1 when anything crashed.

    .venv/bin/python bench/bench_fuzz.py --minutes 2 [--jobs 5] [--targets bundle,onnx]

``--jobs N`` fuzzes N targets at once in separate processes; each still gets ``--minutes`` of
wall time (on a machine with fewer cores than jobs, less CPU time each: the record keeps
``jobs`` and ``cpus`` beside the counts).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # tests.fuzz.targets, tests.bad_inputs (the fixture bundle)

from hypothesis import HealthCheck, given, settings  # noqa: E402

from tests.fuzz.targets import TARGETS, Crash, make_fixture, outcome  # noqa: E402

BATCH = 50


def fuzz_one(name: str, fx: Any, seconds: float, work: Path) -> dict[str, Any]:
    """Run target ``name`` for ``seconds``; the record of inputs tried, crashes, slowest."""
    strategy, runner = TARGETS[name]
    rec: dict[str, Any] = {"tried": 0, "loaded": 0, "refused": 0, "crashes": [],
                           "slowest_s": 0.0, "slowest_input": ""}
    end = time.monotonic() + seconds

    @settings(max_examples=BATCH, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(strategy(fx))
    def batch(inp: Any) -> None:
        if time.monotonic() > end:
            return
        t0 = time.monotonic()
        try:
            rec[outcome(runner(fx, inp, work))] += 1
        except Crash as e:
            rec["crashes"].append({"input": repr(inp)[:300], "error": str(e)[:300]})
        dt = time.monotonic() - t0
        rec["tried"] += 1
        if dt > rec["slowest_s"]:
            rec["slowest_s"], rec["slowest_input"] = round(dt, 4), repr(inp)[:200]

    while time.monotonic() < end:
        batch()
    rec["seconds"] = round(seconds, 1)
    return rec


def _fuzz_job(job: tuple) -> dict[str, Any]:
    return fuzz_one(*job)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0, help="time per target (default 10)")
    ap.add_argument("--targets", default=",".join(TARGETS),
                    help=f"comma-separated subset of {', '.join(TARGETS)}")
    ap.add_argument("--jobs", type=int, default=1,
                    help="targets fuzzed at once, each in its own process (default 1)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "fuzz.json")
    args = ap.parse_args(argv)
    names = [n for n in args.targets.split(",") if n]
    unknown = [n for n in names if n not in TARGETS]
    if unknown or args.minutes <= 0:
        ap.error(f"unknown target {unknown[0]!r}" if unknown else "--minutes must be > 0")
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    with tempfile.TemporaryDirectory(prefix="shiftbook-fuzz-") as tmp:
        fx = make_fixture(Path(tmp) / "fixture")
        jobs = []
        for name in names:
            work = Path(tmp) / name
            work.mkdir()
            jobs.append((name, fx, 60 * args.minutes, work))
        results = {}
        if args.jobs == 1:
            done = (fuzz_one(*j) for j in jobs)
        else:   # each target in its own process, ``--jobs`` at a time (wall-clock budgets)
            pool = multiprocessing.get_context("fork").Pool(min(args.jobs, len(jobs)))
            done = pool.imap(_fuzz_job, jobs)
        for (name, *_), r in zip(jobs, done, strict=True):
            results[name] = r
            print(f"{name:8s} tried {r['tried']:7d}  loaded {r['loaded']:6d}  refused "
                  f"{r['refused']:7d}  crashes {len(r['crashes'])}  slowest {r['slowest_s']:.3f} s"
                  f"  {r['slowest_input'][:80]}", flush=True)
            for c in r["crashes"][:5]:
                print(f"    crash: {c['error']}  <- {c['input'][:120]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"minutes_per_target": args.minutes, "jobs": args.jobs,
                                    "cpus": os.cpu_count(), "targets": results},
                                   indent=2) + "\n")
    total = sum(len(r["crashes"]) for r in results.values())
    print(f"crashes: {total} (must be 0); record: {args.out}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
