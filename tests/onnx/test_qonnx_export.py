"""`shiftbook export --qonnx` (issue 17): a shiftbook-compressed model exported to QONNX and
imported again gives the same bundle, byte for byte; the exported file agrees exactly with the
golden IR under qonnx's executor."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_resnet_rtl import _compress  # tests/ is on sys.path (rootdir conftest)

from shiftbook import flow
from shiftbook.cli import main
from shiftbook.outputs import OutputError


def _files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir()) if p.is_file()}


def test_compressed_model_round_trip_gives_the_same_bundle(tmp_path, capsys):
    ckpt = tmp_path / "m.pt"
    assert _compress("resnet8", "deepshift-q", ckpt)
    a, b, q = tmp_path / "a", tmp_path / "b", tmp_path / "m.onnx"
    assert main(["compile", str(ckpt), "--config", "small", "--calib", "4", "-o", str(a)]) == 0
    capsys.readouterr()
    assert main(["export", str(a), "--qonnx", str(q), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert rec["qonnx"] == str(q.resolve())
    c = flow.compile(q, config="small", calib=4, output=b)
    assert _files(a) == _files(b)
    assert any("reference check (qonnx executor" in n and "exact" in n
               for n in c.lowered.notes)


def test_export_from_a_model_and_output_checks(tmp_path):
    q = tmp_path / "r8.onnx"
    flow.export_qonnx("resnet8", q, config="tiny", calib=2)
    assert q.is_file()
    flow.export_qonnx("resnet8", q, config="tiny", calib=2)      # our own file: replaced
    other = tmp_path / "notes.onnx"
    other.write_text("mine")
    with pytest.raises(OutputError, match="not an earlier `shiftbook export` output"):
        flow.export_qonnx("resnet8", other)
    assert other.read_text() == "mine"
