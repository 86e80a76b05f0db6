"""`shiftbook layer`: JSON record, human table, bundle output and one-line errors."""

from __future__ import annotations

import json

import pytest

from shiftbook.cli import main


def test_json_is_one_object(capsys):
    rc = main(["layer", "--cin", "3", "--cout", "5", "--size", "6", "--config", "tiny",
               "--json"])
    out = capsys.readouterr().out
    assert rc == 0 and out.count("\n") == 1
    rec = json.loads(out)
    assert rec["bit_exact"] is True and rec["mismatches"] == 0
    assert rec["ideal_cycles"] == -(-(5 * 6 * 6 * 3 * 9) // 4)
    assert rec["cycles"] >= rec["ideal_cycles"]
    assert rec["level"] == "functional" and rec["config"] == "tiny"


@pytest.mark.parametrize("extra", [["--level", "golden"], ["--op", "linear", "--cin", "20"],
                                   ["--weights-dist", "extreme", "--input-dist", "extreme"],
                                   ["--weights-dist", "zero", "--stride", "2", "--kernel", "1"],
                                   ["--residual", "--cout", "4", "--config", "tiny"]])
def test_levels_and_distributions(capsys, extra):
    rc = main(["layer", "--cin", "4", "--cout", "6", "--size", "5", "--json", *extra])
    rec = json.loads(capsys.readouterr().out)
    assert rc == 0 and rec["bit_exact"]


def test_human_table_and_bundle(capsys, tmp_path):
    rc = main(["layer", "--cin", "2", "--cout", "3", "--size", "4", "-o", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert rc == 0 and "bit-exact" in out and "yes" in out
    assert (tmp_path / "b" / "manifest.json").is_file()


@pytest.mark.parametrize("argv, msg", [
    (["--op", "pool"], "unknown --op 'pool'"),
    (["--size", "0"], "--size must be a positive integer"),
    (["--cin", "-3"], "--cin must be a positive integer"),
    (["--kernel", "7", "--size", "3", "--padding", "1"], "larger than the padded input"),
    (["--level", "spice"], "unknown --level"),
    (["--config", "nonexistent"], "neither a preset"),
    (["--weights-dist", "weird"], "unknown weight distribution"),
    (["--residual", "--cin", "3", "--cout", "4"], "needs an output shaped like its input"),
])
def test_bad_input_is_one_line(capsys, argv, msg):
    rc = main(["layer", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and msg in err


def test_bad_config_file(capsys, tmp_path):
    p = tmp_path / "c.json"
    p.write_text(json.dumps({"rows": 0}))
    rc = main(["layer", "--config", str(p)])
    err = capsys.readouterr().err
    assert rc == 2 and "rows" in err


@pytest.mark.rtl
@pytest.mark.slow
def test_rtl_level_tiny(capsys):
    rc = main(["layer", "--cin", "3", "--cout", "5", "--size", "5", "--config", "tiny",
               "--level", "rtl", "--json"])
    rec = json.loads(capsys.readouterr().out)
    assert rc == 0 and rec["bit_exact"] and rec["cycles"] >= rec["ideal_cycles"]
