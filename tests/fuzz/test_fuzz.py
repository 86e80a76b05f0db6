"""Bounded fuzz pass over every reader of outside data (tests/fuzz/targets.py).

Each reader gets a fixed number of hypothesis examples (a few seconds each, about a minute
for the set); ``bench/bench_fuzz.py`` runs the same targets for minutes. A few generated
inputs also go through the CLI: one error line on stderr (after any progress lines), a
non-zero exit, nothing written.
"""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import HealthCheck, given, settings

from .targets import TARGETS, outcome

EXAMPLES = {"bundle": 60, "config": 150, "host": 300, "pt2": 60, "onnx": 120}
_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                 suppress_health_check=list(HealthCheck))


@pytest.mark.parametrize("name", list(TARGETS))
def test_reader_loads_or_refuses(name, fuzz_fixture, tmp_path):
    strategy, runner = TARGETS[name]

    @settings(max_examples=EXAMPLES[name], **_SETTINGS)
    @given(strategy(fuzz_fixture))
    def run(inp):
        outcome(runner(fuzz_fixture, inp, tmp_path))

    run()


def _cli(argv: list[str]) -> tuple[int, str]:
    from shiftbook.cli import main

    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, err.getvalue()


@pytest.mark.parametrize("name,argv", [
    ("bundle", ["estimate", "{w}/bundle"]),
    ("config", ["verilog", "--config", "{w}/config.json", "-o", "{w}/out.v"]),
    ("pt2", ["compile", "{w}/model.pt2", "--calib", "1", "-o", "{w}/out"]),
    ("onnx", ["compile", "{w}/model.onnx", "--calib", "1", "-o", "{w}/out"]),
])
def test_cli_one_line(name, argv, fuzz_fixture, tmp_path):
    strategy, runner = TARGETS[name]

    @settings(max_examples=8, **_SETTINGS)
    @given(strategy(fuzz_fixture))
    def run(inp):
        runner(fuzz_fixture, inp, tmp_path)
        before = sorted(p.name for p in tmp_path.rglob("*"))
        rc, err = _cli([a.replace("{w}", str(tmp_path)) for a in argv])
        if rc == 0:
            return
        # progress lines ("[compile] ...") may come first; then exactly one error line
        lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("[")]
        assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
        assert "Warning" not in err, err
        assert sorted(p.name for p in tmp_path.rglob("*")) == before, "a refused run wrote"

    run()
