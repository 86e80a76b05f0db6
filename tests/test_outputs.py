"""Output paths: a command replaces only what shiftbook wrote itself (shiftbook/outputs.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shiftbook.cli import main
from shiftbook.outputs import MARKER, OutputError, check_output_dir, output_kind, publish_dir

LAYER = ["layer", "--op", "conv", "--cin", "2", "--cout", "3", "--kernel", "3", "--size", "4",
         "--level", "golden", "--config", "tiny", "--json"]


def _user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("x\n")
    return d


def test_foreign_directory_and_file_are_refused(tmp_path):
    d = _user_dir(tmp_path)
    with pytest.raises(OutputError, match=r"holds files shiftbook did not write.*--force"):
        check_output_dir(d, "bundle")
    f = tmp_path / "f.txt"
    f.write_text("keep\n")
    with pytest.raises(OutputError, match=r"exists and is not a bundle directory"):
        check_output_dir(f, "bundle")
    # nothing, an empty directory, or --force: accepted
    check_output_dir(tmp_path / "new" / "deeper", "bundle")
    (tmp_path / "empty").mkdir()
    check_output_dir(tmp_path / "empty", "bundle")
    check_output_dir(d, "bundle", force=True)


def test_publish_replaces_only_its_own_kind(tmp_path):
    out = tmp_path / "out"
    for n in range(2):      # a second publish replaces the first (same kind)
        tmp = tmp_path / f".tmp{n}"
        tmp.mkdir()
        (tmp / "a").write_text(str(n))
        publish_dir(tmp, out, "report")
    assert (out / "a").read_text() == "1" and output_kind(out) == "report"
    assert json.loads((out / MARKER).read_text()) == {"kind": "report"}
    tmp = tmp_path / ".tmp-b"
    tmp.mkdir()
    with pytest.raises(OutputError, match=r"holds a shiftbook report, not a bundle"):
        publish_dir(tmp, out, "bundle")
    assert (out / "a").read_text() == "1"
    d = _user_dir(tmp_path)
    with pytest.raises(OutputError):
        publish_dir(tmp, d, "bundle")
    assert (d / "notes.txt").read_text() == "x\n"
    publish_dir(tmp, d, "bundle", force=True)
    assert not (d / "notes.txt").exists() and output_kind(d) == "bundle"


def test_legacy_bundle_is_recognised(tmp_path):
    b = tmp_path / "b"
    b.mkdir()
    (b / "manifest.json").write_text(json.dumps({"format": "shiftbook-bundle"}))
    assert output_kind(b) == "bundle"
    check_output_dir(b, "bundle")


def test_layer_cli_keeps_user_files(tmp_path, capsys):
    d = _user_dir(tmp_path)
    assert main([*LAYER, "-o", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds files shiftbook did not write" in err[0] and str(d) in err[0]
    assert (d / "notes.txt").read_text() == "x\n"
    f = tmp_path / "file.bin"
    f.write_bytes(b"\x00data")
    assert main([*LAYER, "-o", str(f)]) == 2
    assert f.read_bytes() == b"\x00data"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]   # nothing half-written
    # a bundle it wrote is replaced; --force replaces anything
    b = tmp_path / "bundle"
    assert main([*LAYER, "-o", str(b)]) == 0
    assert main([*LAYER, "-o", str(b)]) == 0 and output_kind(b) == "bundle"
    assert main([*LAYER, "-o", str(d), "--force"]) == 0
    assert not (d / "notes.txt").exists() and output_kind(d) == "bundle"


def test_compile_refuses_user_files_before_any_work(tmp_path, capsys, monkeypatch):
    import shiftbook.sw.flow_compile as flow_compile

    def no_work(*a, **k):
        raise AssertionError("compiled although the output path is refused")

    monkeypatch.setattr(flow_compile, "compile_model", no_work)
    d = _user_dir(tmp_path)
    assert main(["compile", "resnet8", "--calib", "2", "-o", str(d)]) == 2
    assert "holds files shiftbook did not write" in capsys.readouterr().err
    assert (d / "notes.txt").read_text() == "x\n"
    f = tmp_path / "existing"
    f.write_text("mine")
    assert main(["compile", "resnet8", "-o", str(f)]) == 2 and f.read_text() == "mine"
