"""Every command has ``--json`` printing exactly one JSON object (issue 18); `run` prints text
by default; the presets in the help come from shiftbook.config."""

from __future__ import annotations

import argparse
import json
from types import SimpleNamespace

import pytest

from shiftbook.cli import COMMANDS, build_parser, main
from shiftbook.config import PRESETS


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    p = build_parser()
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def test_every_command_has_json():
    subs = _subparsers()
    assert set(COMMANDS) <= set(subs)
    for name, sp in subs.items():
        flags = {f for a in sp._actions for f in a.option_strings}
        assert "--json" in flags, f"shiftbook {name} has no --json"


@pytest.mark.parametrize("name", ["verilog", "compile", "layer"])
def test_config_help_lists_every_preset(name):
    sp = _subparsers()[name]
    help_text = next(a.help for a in sp._actions if "--config" in a.option_strings)
    for preset in PRESETS:
        assert preset in help_text, (name, preset)


def test_compress_json_alone_prints_and_with_a_file_writes():
    sp = _subparsers()["compress"]
    base = ["resnet8", "--method", "pq", "-o", "c.pt"]
    assert sp.parse_args([*base, "--json"]).json is not None
    args = sp.parse_args([*base, "--json", "s.json"])
    assert args.json == "s.json" and args.summary is None
    assert sp.parse_args([*base, "--summary", "s.json"]).summary == "s.json"


def _fake_board(monkeypatch):
    from shiftbook import flow

    res = SimpleNamespace(cycles=1234, marks=[(0, 600), (1, 1200)],
                          outputs={"out": b"\x01" * 40}, memory=None)

    def run_on_board(port, bundle, **kw):
        if kw.get("progress"):
            kw["progress"]("loading")
        return res

    monkeypatch.setattr(flow, "run_on_board", run_on_board)


def test_run_json_is_one_object_and_text_by_default(monkeypatch, capsys, tmp_path):
    _fake_board(monkeypatch)
    assert main(["run", str(tmp_path), "--port", "/dev/fake", "--json"]) == 0
    out, err = capsys.readouterr()
    rec = json.loads(out)
    assert rec["cycles"] == 1234 and rec["outputs"] == {"out": 40} and err == ""
    assert main(["run", str(tmp_path), "--port", "/dev/fake"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("1234 cycles on the board") and "loading" in err


def test_simulate_waves_needs_rtl(capsys, tmp_path):
    rc = main(["simulate", str(tmp_path), "--waves", str(tmp_path / "w")])
    assert rc == 2 and "--waves needs --level rtl" in capsys.readouterr().err
    rc = main(["simulate", str(tmp_path), "--level", "rtl", "--layer", "conv1"])
    assert rc == 2 and "give --waves too" in capsys.readouterr().err


def test_stage_lines_only_for_stages_that_take_a_while(capsys):
    from shiftbook.commands.progress import Stage

    with Stage("verilog", "quick"):
        pass
    assert capsys.readouterr().err == ""            # an instant stage (or error) says nothing
    with Stage("verilog", "slow", delay_s=0.0):
        import time

        time.sleep(0.1)
    err = capsys.readouterr().err.splitlines()      # not a TTY: a start and an end line
    assert err[0] == "[verilog] slow ..." and err[1].startswith("[verilog] slow: done in")
    with pytest.raises(ValueError), Stage("verilog", "fails", delay_s=0.0):
        time.sleep(0.05)
        raise ValueError("bad")
    assert capsys.readouterr().err == "[verilog] fails ...\n"
    with Stage("verilog", "off", enabled=False, delay_s=0.0):
        time.sleep(0.05)
    assert capsys.readouterr().err == ""
    st = Stage("compile", "lowering")      # the redrawn (TTY) line carries the detail
    st.detail = "quantized 3/21 layers (layer1.0.conv2)"
    assert st._line().startswith("[compile] lowering: quantized 3/21 layers (layer1.0.conv2) ...")


def test_waves_on_fail_traces_the_first_failing_layer(monkeypatch, capsys, tmp_path):
    from shiftbook import flow
    from shiftbook.commands import simulate as sim_cmd

    bundle = tmp_path / "b"
    assert main(["layer", "--config", "tiny", "--cin", "3", "--cout", "4", "--size", "5",
                 "-o", str(bundle), "--json"]) == 0
    capsys.readouterr()
    rec = {"bit_exact": False, "layers": [{"index": 0, "bit_exact": False, "cycles": 9}]}
    monkeypatch.setattr(flow, "run", lambda *a, **k: SimpleNamespace(record=dict(rec)))
    seen = []

    def fake_waves(b, x, layer, out, record, timeout):
        seen.append((layer.name, out))
        return {"layer": layer.name}

    monkeypatch.setattr(sim_cmd, "_write_waves", fake_waves)
    rc = main(["simulate", str(bundle), "--level", "rtl", "--waves-on-fail",
               str(tmp_path / "w"), "--json"])
    assert rc == 1 and seen == [("layer0", str(tmp_path / "w"))]
    assert json.loads(capsys.readouterr().out)["waves"] == {"layer": "layer0"}
