"""Issue 21 item 4: a lossy fit to the core config is measured, reported per layer, and an
error beyond ``--max-adapt-error`` (sw/frontend/adaptation.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from shiftbook import numerics as nx
from shiftbook.cli import main
from shiftbook.config import CoreConfig
from shiftbook.sw.frontend import export_module, lower, save_pt2
from shiftbook.sw.frontend.adaptation import (
    DEFAULT_MAX_ADAPT_ERROR,
    AdaptationError,
    check_adaptation,
)

ACC16 = CoreConfig(acc_bits=16, exp_bits=3, name="acc16")


class Wide(nn.Module):
    """The issue's case: one 3x3 convolution reducing 512 channels to 8."""

    def __init__(self, cin: int = 512) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, 8, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def _model(cin: int, tmp_path, seed: int = 0):
    torch.manual_seed(seed)
    path = tmp_path / f"wide{cin}.pt2"
    save_pt2(export_module(Wide(cin).eval(), (cin, 4, 4)), path)
    return path


def test_adaptation_is_measured_per_layer():
    torch.manual_seed(0)
    m = Wide().eval()
    cal = torch.randn(4, 512, 4, 4)
    wide = lower(m, calib=cal, input_shape=(512, 4, 4), gptq=False,
                 config=CoreConfig(acc_bits=32, exp_bits=3))
    assert "adaptation" not in wide.layers[0]
    low = lower(m, calib=cal, input_shape=(512, 4, 4), gptq=False, config=ACC16)
    a = low.layers[0]["adaptation"]
    z = nx.shift_fields(low.graph.ops[0].weight, 3)[0]
    assert a["weights_zeroed"] > 0.9 and float(np.mean(z != 0)) >= a["weights_zeroed"]
    assert a["rel_error"] > DEFAULT_MAX_ADAPT_ERROR and a["w_frac_lowered"] >= 1
    with pytest.raises(AdaptationError, match=r"^layer conv: fitting the 16-bit accumulator "
                                              r"changes its output by .* beyond the limit 0.25"):
        check_adaptation(low.layers, 16)
    check_adaptation(low.layers, 16, max_error=a["rel_error"])
    check_adaptation(wide.layers, 32, max_error=0.0)


def test_compile_refuses_a_degraded_layer(tmp_path, capsys):
    cfg = tmp_path / "acc16.json"
    cfg.write_text(ACC16.to_json())
    out = tmp_path / "b"
    rc = main(["compile", str(_model(512, tmp_path)), "--config", str(cfg), "--calib", "2",
               "-o", str(out)])
    # stage lines ("[compile] ...", cli/progress.py) may come first; then one error line
    err = [ln for ln in capsys.readouterr().err.strip().splitlines() if not ln.startswith("[")]
    assert rc == 2 and len(err) == 1 and not out.exists()
    assert err[0].startswith("shiftbook compile: error: layer conv: fitting the 16-bit "
                             "accumulator changes its output by ")
    assert "beyond the limit 0.25 (--max-adapt-error" in err[0]


def test_compile_reports_an_accepted_adaptation(tmp_path, capsys):
    cfg = tmp_path / "acc16.json"
    cfg.write_text(ACC16.to_json())
    out = tmp_path / "b"
    args = ["compile", str(_model(64, tmp_path)), "--config", str(cfg), "--calib", "2",
            "-o", str(out), "--max-adapt-error", "100"]
    assert main(args) == 0
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("adapted: ")]
    assert len(lines) == 1 and lines[0].startswith("adapted: layer conv: weight scale lowered")
    man = json.loads((out / "manifest.json").read_text())
    a = man["layers"][0]["adaptation"]
    assert set(a) == {"weights_changed", "weights_zeroed", "rel_error", "w_frac_lowered"}
    assert f"relative output error {a['rel_error']:.3g}" in lines[0]
    assert main(args[:-2] + ["--max-adapt-error", "-1", "--force"]) == 2
    assert "--max-adapt-error must be >= 0" in capsys.readouterr().err
