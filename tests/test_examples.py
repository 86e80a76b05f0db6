"""The notebook-style example runs top to bottom and its objects say what the CLI says."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_resnet8_notebook_example(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r8"
    monkeypatch.setattr(sys, "argv", ["resnet8_notebook.py", str(out)])
    ns = runpy.run_path(str(ROOT / "examples" / "resnet8_notebook.py"), run_name="__main__")
    run, compiled, est = ns["run"], ns["compiled"], ns["est"]
    assert run.bit_exact and run.level == "functional" and run.first_mismatch is None
    assert [lay.name for lay in run.layers] == [lay.name for lay in compiled.layers]
    assert all(lay.bit_exact and lay.cycles >= lay.ideal_cycles > 0 for lay in run.layers)
    assert run.cycles == est.total and run.cycles_source == "estimate"
    assert (out / "manifest.json").is_file()
    text = capsys.readouterr().out
    assert "bit-exact: True" in text and "uJ" in text
