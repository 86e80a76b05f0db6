"""Every CLI option is checked before work starts: one line naming the option, exit 2.

`compress` (numbers and output paths, before any training), `simulate` (non-finite inputs,
negative --timeout-cycles), `run` (--baud, --timeout, before the board is touched) and the
functional simulator's cycle limit (the RTL watchdog's twin)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from shiftbook.cli import main
from shiftbook.config import PRESETS
from shiftbook.isa import Insn, Opcode, encode_program
from shiftbook.sim.functional import SimError, run_program


def _err(capsys: pytest.CaptureFixture[str], command: str) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"shiftbook {command}: error:"), err
    return err


@pytest.fixture(autouse=True)
def _no_training(monkeypatch: pytest.MonkeyPatch) -> None:
    """A validation test that gets as far as training or compressing has already failed."""
    import shiftbook.sw.compress as compress_mod
    import shiftbook.sw.train as train_mod

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(train_mod, "train", boom)
    monkeypatch.setattr(compress_mod, "compress", boom)


# ---------------------------------------------------------------- compress
@pytest.mark.parametrize("argv,msg", [
    (["--method", "pq", "--d", "0"], "--d 0 must be >= 1"),
    (["--method", "pq", "--k", "0"], "--k 0 must be >= 2"),
    (["--method", "kmeans", "--k", "1"], "--k 1 must be >= 2"),
    (["--method", "pq", "--epochs", "-1"], "--epochs -1 must be >= 0"),
    (["--method", "pq", "--baseline-epochs", "-3"], "--baseline-epochs -3 must be >= 0"),
    (["--method", "pq", "--seed", "-1"], "--seed -1 must be >= 0"),
    (["--method", "pq", "--ratio", "0"], "--ratio 0 must be a finite number > 0"),
    (["--method", "pq", "--ratio", "-2"], "--ratio -2 must be a finite number > 0"),
    (["--method", "pq", "--ratio", "nan"], "--ratio nan must be a finite number > 0"),
    (["--method", "pq", "--ratio", "inf"], "--ratio inf must be a finite number > 0"),
    (["--method", "deepshift-q", "--k", "16"], "--k applies to kmeans, mlq and pq only"),
    (["--method", "inq", "--d", "4"], "--d applies to kmeans, mlq and pq only"),
    (["--method", "mlq", "--k", "1"], "--k 1 must be >= 2"),
])
def test_compress_numbers_refused_before_training(tmp_path: Path, capsys, argv, msg):
    out = tmp_path / "o.pt"
    rc = main(["compress", "resnet8", "-o", str(out), "--quiet", *argv])
    assert rc == 2
    assert msg in _err(capsys, "compress")
    assert not out.exists()


@pytest.mark.parametrize("flag", ["-o", "--json", "--save-float", "--export"])
def test_compress_missing_output_directory(tmp_path: Path, capsys, flag):
    paths = {"-o": tmp_path / "o.pt"}
    paths[flag] = tmp_path / "nodir" / "f.out"
    argv = [x for f, p in paths.items() for x in (f, str(p))]
    rc = main(["compress", "resnet8", "--method", "pq", "--quiet", *argv])
    assert rc == 2
    err = _err(capsys, "compress")
    assert flag in err and "does not exist" in err and str(tmp_path / "nodir") in err


def test_compress_output_is_a_directory(tmp_path: Path, capsys):
    rc = main(["compress", "resnet8", "--method", "pq", "--quiet", "-o", str(tmp_path)])
    assert rc == 2
    assert "is a directory, not a file" in _err(capsys, "compress")


def test_compress_read_only_json_directory(tmp_path: Path, capsys, monkeypatch):
    ro = tmp_path / "rodir"
    ro.mkdir()
    real_access = os.access

    def access(path: str | os.PathLike[str], mode: int) -> bool:  # root ignores chmod 555
        return False if Path(path) == ro and mode & os.W_OK else real_access(path, mode)

    monkeypatch.setattr(os, "access", access)
    rc = main(["compress", "resnet8", "--method", "pq", "--quiet", "-o",
               str(tmp_path / "o.pt"), "--json", str(ro / "s.json")])
    assert rc == 2
    err = _err(capsys, "compress")
    assert "--json" in err and "is not writable" in err


def test_compress_save_float_needs_training(tmp_path: Path, capsys):
    rc = main(["compress", "resnet8", "--method", "pq", "--quiet", "-o", str(tmp_path / "o.pt"),
               "--weights", str(tmp_path / "w.pt"), "--save-float", str(tmp_path / "f.pt")])
    assert rc == 2
    assert "--save-float applies only when" in _err(capsys, "compress")


# ---------------------------------------------------------------- simulate
@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "b"
    assert main(["layer", "--cin", "2", "--cout", "3", "--size", "4", "-o", str(out)]) == 0
    return out


def _input_shape(bundle: Path) -> tuple[int, ...]:
    from shiftbook.sw.bundle import load_bundle

    b = load_bundle(bundle)
    return tuple(b.tensors[b.manifest.inputs[0]].shape)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_simulate_refuses_non_finite_input(bundle: Path, tmp_path: Path, capsys, bad):
    x = np.zeros(_input_shape(bundle), np.float32)
    x.flat[3] = bad
    f = tmp_path / "x.npy"
    np.save(f, x)
    capsys.readouterr()
    rc = main(["simulate", str(bundle), "--input", str(f)])
    assert rc == 2
    err = _err(capsys, "simulate")
    assert str(f) in err and "non-finite" in err
    assert "bit-exact" not in capsys.readouterr().out


def test_simulate_finite_float_input_still_runs(bundle: Path, tmp_path: Path, capsys):
    f = tmp_path / "x.npy"
    np.save(f, np.full(_input_shape(bundle), 0.25, np.float32))
    assert main(["simulate", str(bundle), "--input", str(f)]) == 0
    assert "bit-exact: yes" in capsys.readouterr().out


def test_simulate_refuses_negative_timeout(bundle: Path, capsys):
    capsys.readouterr()
    rc = main(["simulate", str(bundle), "--timeout-cycles", "-5"])
    assert rc == 2
    assert "--timeout-cycles -5 must be >= 0" in _err(capsys, "simulate")


def test_simulate_functional_honours_timeout_cycles(bundle: Path, capsys):
    capsys.readouterr()
    rc = main(["simulate", str(bundle), "--level", "functional", "--timeout-cycles", "3",
               "--json"])
    assert rc == 2
    err = _err(capsys, "simulate")
    assert "cycle limit of 3" in err
    # 0 keeps its documented meaning: no limit
    assert main(["simulate", str(bundle), "--level", "functional",
                 "--timeout-cycles", "0"]) == 0


# ---------------------------------------------------------------- run
@pytest.mark.parametrize("argv,msg", [
    (["--baud", "0"], "--baud 0 must be a positive rate"),
    (["--baud", "-9600"], "--baud -9600 must be a positive rate"),
    (["--timeout", "-1"], "--timeout -1 must be a number of seconds >= 0"),
    (["--timeout", "nan"], "--timeout nan must be a number of seconds >= 0"),
])
def test_run_refuses_bad_link_options(tmp_path: Path, capsys, monkeypatch, argv, msg):
    import shiftbook.sw.host as host

    def boom(*_a: object, **_k: object) -> None:
        raise AssertionError("the board was opened before the options were checked")

    monkeypatch.setattr(host, "load_bundle_and_run", boom)
    rc = main(["run", str(tmp_path / "b"), "--port", "/dev/null", *argv])
    assert rc == 2
    assert msg in _err(capsys, "run")


def test_run_refuses_file_as_output_dir(tmp_path: Path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    rc = main(["run", str(tmp_path / "b"), "--port", "/dev/null", "-o", str(f)])
    assert rc == 2
    assert "is not a directory" in _err(capsys, "run")


# ---------------------------------------------------------------- functional cycle limit
def _nops(n: int) -> bytes:
    return encode_program([Insn(Opcode.NOP, {}) for _ in range(n)] + [Insn(Opcode.END, {})])


def test_functional_cycle_limit_raises_with_the_cycle_count():
    cfg = PRESETS["small"]
    full = run_program(cfg, _nops(50))
    assert full.cycles > 10
    with pytest.raises(SimError, match=r"no END within the cycle limit of 10 \(cycle \d+"):
        run_program(cfg, _nops(50), max_cycles=10)
    assert run_program(cfg, _nops(50), max_cycles=full.cycles).cycles == full.cycles
    assert run_program(cfg, _nops(50), max_cycles=0).cycles == full.cycles
    with pytest.raises(SimError, match="must be >= 0"):
        run_program(cfg, _nops(50), max_cycles=-1)


def test_functional_default_limit_is_the_rtl_watchdogs():
    from shiftbook.sim.rtl.runner import DEFAULT_TIMEOUT_CYCLES

    assert DEFAULT_TIMEOUT_CYCLES > 0


def test_verilog_board_honours_config(tmp_path, capsys):
    """`verilog --board B --config C` builds the board with C (it ignored --config)."""
    bad = tmp_path / "bad.json"
    bad.write_text('{"rows": 0}')
    rc = main(["verilog", "--board", "icebreaker", "--config", str(bad),
               "-o", str(tmp_path / "v")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "rows" in err[0], err
    assert not (tmp_path / "v").exists()
