"""Issue 19: a ``.pt2`` that is not a readable archive (random bytes, text, empty, truncated,
damaged) prints shiftbook's one line only: no torch log lines or warnings before it, and the
line names the real cause, not torch's "check the warnings above"."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from .cases import RANDOM, _damage


@pytest.fixture(scope="module")
def model_bytes(tmp_path_factory):
    import torch
    from torch import nn

    from shiftbook.sw.frontend import export_module, save_pt2

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.ReLU()).eval()
    p = save_pt2(export_module(net, (2, 8, 8)), tmp_path_factory.mktemp("pt2") / "m.pt2")
    return p.read_bytes()


@pytest.mark.parametrize("kind", ["random", "truncated", "damaged"])
def test_bad_pt2_prints_one_line(kind, model_bytes, tmp_path):
    data = {"random": RANDOM, "text": b"hello\n", "empty": b"",
            "truncated": model_bytes[:-200], "damaged": _damage(model_bytes)}[kind]
    f = tmp_path / f"{kind}.pt2"
    f.write_bytes(data)
    env = {k: v for k, v in os.environ.items() if k != "SHIFTBOOK_TRACEBACK"}
    p = subprocess.run([sys.executable, "-m", "shiftbook", "compile", str(f), "--calib", "1",
                        "-o", str(tmp_path / "out")], capture_output=True, text=True, env=env,
                       timeout=120)
    lines = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith("[")]
    assert p.returncode == 2, p.stderr
    assert len(lines) == 1 and lines[0].startswith("shiftbook compile: error:"), p.stderr
    assert f.name in lines[0] and "warnings above" not in lines[0], lines[0]
    assert not (tmp_path / "out").exists()
