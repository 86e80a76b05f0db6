"""Compile time and peak memory of `shiftbook compile` (issue 20), measured side by side.

Each case runs the real command line (``python -m shiftbook compile MODEL --config CFG``, the
default calibration) in a child process and reads the child's wall time, CPU time
(user + sys, less affected by other load on a shared machine than wall time) and peak
resident memory (``ru_maxrss`` of the child: torch allocates outside ``tracemalloc``'s view).
Then the first case twice through ``--calib-cache`` (store, then hit: calibration and
quantization skipped). A last case compiles ResNet-50 for a config whose memory it does not
fit, and records how long the one-line refusal takes.

    .venv/bin/python bench/bench_compile.py [--cases resnet18:base resnet50:base-xl] [--calib N]

Writes ``bench/out/compile.json``. Targets (issue 20): ResNet-18 <= 20 s, ResNet-50 <= 60 s
and <= 3 GB, a model too large for the config refused in < 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CASES = ("resnet18:base", "resnet50:base-xl")
TOO_LARGE = "resnet50:base"     # 38+ MB of program and data, base addresses 32 MiB


def run_child(argv: list[str]) -> dict[str, Any]:
    """Run ``argv`` to completion; its exit status, wall and CPU seconds, peak RSS (bytes) and
    the last lines of its stdout and stderr."""
    with tempfile.TemporaryFile("w+") as outf, tempfile.TemporaryFile("w+") as errf:
        t0 = time.perf_counter()
        proc = subprocess.Popen(argv, cwd=ROOT, stdout=outf, stderr=errf)
        _, rc, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(rc)
        last = []
        for f in (outf, errf):
            f.seek(0)
            lines = [ln for ln in f.read().strip().splitlines() if ln.strip()]
            last.append(lines[-1] if lines else "")
    return {"rc": proc.returncode, "wall_s": round(wall, 2),
            "cpu_s": round(ru.ru_utime + ru.ru_stime, 2),
            "peak_rss_bytes": ru.ru_maxrss * 1024,      # Linux reports KiB
            "last_stdout": last[0], "last_stderr": last[1]}


def compile_case(model: str, config: str, calib: int | None, out: Path,
                 cache: Path | None = None) -> dict[str, Any]:
    argv = [sys.executable, "-m", "shiftbook", "compile", model, "--config", config,
            "-o", str(out), "--force"]
    if cache is not None:
        argv += ["--calib-cache", str(cache)]
    if calib is not None:
        argv += ["--calib", str(calib)]
    rec = run_child(argv)
    man = out / "manifest.json"
    if rec["rc"] == 0 and man.is_file():
        m = json.loads(man.read_text())
        rec["memory_bytes"] = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
        rec["layers"] = len(m.get("layers", []))
        rec.update(weight_reads(m["layers"], config))
    return {"model": model, "config": config, "calib": calib, **rec}


def weight_reads(layers: list[dict[str, Any]], config: str) -> dict[str, Any]:
    """Weight (and codebook) bytes the program reads per inference against the bytes stored,
    whole network and the worst layer, and how many layers whose weights fit the config's
    WGT buffer read them more than once (issue 20: none may). A layer larger than WGT
    re-reads either its weights or its input; the compiler takes the faster by the cycle
    model."""
    from shiftbook.config import load_config

    cfg = load_config(config)
    wcap = cfg.wbuf_rows * cfg.wbuf_row_bytes
    stored = sum(lay["weight_bytes"] for lay in layers)
    read = sum(lay["weight_bytes_read"] for lay in layers)
    worst = max((lay for lay in layers if lay["weight_bytes"]),
                key=lambda lay: lay["weight_bytes_read"] / lay["weight_bytes"])
    return {"weight_bytes": stored, "weight_bytes_read": read,
            "weight_read_ratio": round(read / stored, 3),
            "worst_layer": worst["name"],
            "worst_read_ratio": round(worst["weight_bytes_read"] / worst["weight_bytes"], 3),
            "layers_read_more_than_once": sum(
                1 for lay in layers if lay["weight_bytes_read"] > lay["weight_bytes"]),
            "wgt_bytes": wcap,
            "fitting_layers_read_more_than_once": sum(
                1 for lay in layers if 0 < lay["weight_bytes"] <= wcap
                and lay["weight_bytes_read"] > lay["weight_bytes"])}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", nargs="*", default=list(DEFAULT_CASES), metavar="MODEL:CONFIG")
    ap.add_argument("--calib", type=int, default=None,
                    help="calibration images (default: the compile command's default)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "out" / "compile.json"))
    args = ap.parse_args(argv)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-compile-") as tmp:
        for i, case in enumerate(args.cases):
            model, config = case.split(":")
            rec = compile_case(model, config, args.calib, Path(tmp) / f"b{i}")
            rows.append(rec)
            print(f"{model:10s} {config:8s} rc={rec['rc']} wall {rec['wall_s']:7.1f} s  "
                  f"cpu {rec['cpu_s']:7.1f} s  peak {rec['peak_rss_bytes'] / 2**30:5.2f} GiB",
                  flush=True)
            if "weight_read_ratio" in rec:
                print(f"{'':19s} weights read {rec['weight_bytes_read']:,} B for "
                      f"{rec['weight_bytes']:,} stored ({rec['weight_read_ratio']:.2f}x); "
                      f"{rec['layers_read_more_than_once']} layers above 1x (of them "
                      f"{rec['fitting_layers_read_more_than_once']} within the "
                      f"{rec['wgt_bytes'] // 1024} KiB WGT), worst "
                      f"{rec['worst_layer']} {rec['worst_read_ratio']:.2f}x", flush=True)
        # a repeated compile through the calibration cache: the first stores, the second hits
        model, config = args.cases[0].split(":")
        cached = []
        for what in ("store", "hit"):
            rec = compile_case(model, config, args.calib, Path(tmp) / f"cache-{what}",
                               Path(tmp) / "calib-cache")
            cached.append({"run": what, **rec})
            print(f"{model:10s} {config:8s} --calib-cache ({what}): rc={rec['rc']} wall "
                  f"{rec['wall_s']:7.1f} s  cpu {rec['cpu_s']:7.1f} s: "
                  f"{rec['last_stdout'].split('; bundle')[0]}",
                  flush=True)
        model, config = TOO_LARGE.split(":")
        refuse = compile_case(model, config, args.calib, Path(tmp) / "too-large")
    print(f"{model} on {config} (too large): rc={refuse['rc']} in {refuse['wall_s']:.1f} s "
          f"wall, {refuse['cpu_s']:.1f} s cpu: {refuse['last_stderr']}")
    if len(rows) >= 2:
        a, b = rows[0], rows[1]
        print(f"side by side: {b['model']}/{a['model']} wall {b['wall_s'] / a['wall_s']:.2f}x, "
              f"cpu {b['cpu_s'] / max(a['cpu_s'], 1e-9):.2f}x, peak "
              f"{b['peak_rss_bytes'] / max(a['peak_rss_bytes'], 1):.2f}x")
    rec = {"bench": "compile", "cpus": os.cpu_count(), "load_avg": os.getloadavg(),
           "cases": rows, "calib_cache": cached, "too_large": refuse,
           "targets": {"resnet18_s": 20, "resnet50_s": 60, "resnet50_bytes": 3 * 10**9,
                       "refusal_s": 5}}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
