"""Run the bad-input corpus (``cases.py``) in-process and classify every case.

``shiftbook.cli.main(argv)`` runs in this process (a subprocess per case would spend most of
its time importing torch), with stdout/stderr captured and ``SystemExit`` caught. A case is

- **clean**: a non-zero exit whose stderr ends in one error line (``...error...``), with no
  ``Traceback`` anywhere, naming what the case's ``expect`` asks for;
- **vague**: clean but the line does not name the file or option (``expect``);
- **traceback**: an exception escaped ``main``, or stderr holds a traceback;
- **silent**: exit status 0 (a bad input accepted), or still working after ``CASE_LIMIT_S``
  seconds (the input was not refused up front).

Each record also lists ``left``: the files a failed case left in its work directory (a
refused command writes nothing).

``python -m tests.bad_inputs.runner`` runs the whole table, prints the counts and writes
``bench/out/bad_inputs.json``; tests/bad_inputs/test_bad_inputs.py runs it under pytest.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .cases import Case, build_cases

__all__ = ["Fixtures", "make_fixtures", "run_case", "run_corpus", "write_record",
           "CASE_LIMIT_S", "MODEL_SHAPE"]

CASE_LIMIT_S = 30
MODEL_SHAPE = (2, 8, 8)
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Fixtures:
    root: Path
    model: Path
    bundle: Path
    cfg: Path


def make_fixtures(root: Path) -> Fixtures:
    """A small valid ``.pt2`` model, a bundle compiled from it (tiny preset), a valid config
    file: made once, every bad case derives from them."""
    import torch
    from torch import nn

    from shiftbook.cli import main
    from shiftbook.config import PRESETS
    from shiftbook.sw.frontend import export_module, save_pt2

    root.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 1)).eval()
    model = save_pt2(export_module(net, MODEL_SHAPE), root / "model.pt2")
    cfg = root / "tiny.json"
    cfg.write_text(PRESETS["tiny"].to_json())
    bundle = root / "bundle"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(["compile", str(model), "--config", "tiny", "--calib", "2", "-o", str(bundle)])
    if rc != 0:
        raise RuntimeError("the fixture bundle did not compile")
    return Fixtures(root, model, bundle, cfg)


class CaseTimeout(BaseException):
    """A case still working after its time limit (not an Exception: nothing may catch it)."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise CaseTimeout()


def _fmt(s: str, w: Path, fx: Fixtures) -> str:
    return (s.replace("{w}", str(w)).replace("{model}", str(fx.model))
            .replace("{bundle}", str(fx.bundle)).replace("{cfg}", str(fx.cfg)))


def prepare(case: Case, fx: Fixtures, workdir: Path) -> tuple[list[str], dict[str, str]]:
    """Create the case's files; returns (argv, env overrides)."""
    w = workdir / case.id.replace("/", "__")
    if w.exists():
        _chmod_tree(w)
        shutil.rmtree(w)
    w.mkdir(parents=True)
    for name, content in case.files.items():
        p = w / _fmt(name, w, fx)
        if callable(content):
            content(p, fx)
        elif isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
    if case.setup is not None:
        case.setup(w, fx)
    argv = [_fmt(a, w, fx) for a in case.argv]
    env = {k: _fmt(v, w, fx) for k, v in case.env.items()}
    return argv, env


def _listing(w: Path) -> set[Path]:
    """Every path under ``w`` (what a failed command must not add to)."""
    return set(w.rglob("*")) if w.is_dir() else set()


def _chmod_tree(p: Path) -> None:
    for d, _, _ in os.walk(p):
        with contextlib.suppress(OSError):
            os.chmod(d, 0o755)


def classify(rc: int | None, err: str, expect: str | None) -> str:
    import re

    if rc is None or "Traceback (most recent call last)" in err:
        return "traceback"
    if rc == 0:
        return "silent"
    lines = [ln for ln in err.splitlines() if ln.strip()]
    if not lines or "error" not in lines[-1].lower():
        return "traceback"      # a non-zero exit with no error line: unexplained
    if expect and not re.search(expect, lines[-1]):
        return "vague"
    return "clean"


def run_case(case: Case, fx: Fixtures, workdir: Path, limit_s: int = CASE_LIMIT_S
             ) -> dict[str, Any]:
    """Run one case in-process; returns its record (id, category, argv, outcome, rc, last
    error line, seconds)."""
    from shiftbook.cli import main

    argv, env = prepare(case, fx, workdir)
    w = workdir / case.id.replace("/", "__")
    before = _listing(w)
    saved = {k: os.environ.get(k) for k in env} | {"PATH": os.environ.get("PATH")}
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    old = signal.signal(signal.SIGALRM, _on_alarm)
    signal.alarm(limit_s)
    t0 = time.monotonic()
    rc: int | None = None
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    except CaseTimeout:
        rc = 0
        err.write(f"(still running after {limit_s} s: not refused up front)\n")
    except Exception:  # noqa: BLE001 - that is what the corpus looks for
        err.write(traceback.format_exc())
        rc = None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    text = err.getvalue()
    outcome = classify(rc, text, case.expect)
    left = sorted(str(p.relative_to(w)) for p in _listing(w) - before)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return {"id": case.id, "category": case.category, "argv": argv, "outcome": outcome,
            "rc": rc, "error": lines[-1] if lines else "", "expect": case.expect,
            "seconds": round(time.monotonic() - t0, 2), "left": left,
            **({"stderr": text[-3000:]} if outcome == "traceback" else {})}


def run_corpus(fx: Fixtures, workdir: Path, cases: list[Case] | None = None,
               progress: bool = False) -> dict[str, Any]:
    """Every case; returns the summary record (counts and one record per case)."""
    recs = []
    for case in cases if cases is not None else build_cases():
        rec = run_case(case, fx, workdir)
        recs.append(rec)
        if progress:
            print(f"{rec['outcome']:9s} {rec['seconds']:6.2f}s {rec['id']}: {rec['error']}",
                  file=sys.stderr, flush=True)
    counts = {k: sum(r["outcome"] == k for r in recs)
              for k in ("clean", "vague", "traceback", "silent")}
    return {"tried": len(recs), **counts, "cases": recs}


def summary_line(rec: dict[str, Any]) -> str:
    return (f"bad inputs: {rec['tried']} tried, {rec['clean']} clean one-line errors "
            f"({rec['vague']} of them not naming the file or option), {rec['traceback']} "
            f"tracebacks, {rec['silent']} silent successes")


def write_record(rec: dict[str, Any], path: Path | None = None) -> Path:
    path = path or ROOT / "bench" / "out" / "bad_inputs.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(rec, indent=1) + "\n")
    return path


def main() -> int:
    with tempfile.TemporaryDirectory(prefix="shiftbook-bad-") as tmp:
        fx = make_fixtures(Path(tmp) / "fixtures")
        rec = run_corpus(fx, Path(tmp) / "cases", progress="-v" in sys.argv)
        _chmod_tree(Path(tmp))
    print(summary_line(rec))
    print(f"wrote {write_record(rec)}")
    return 0 if rec["traceback"] == rec["silent"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
