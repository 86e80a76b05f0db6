"""`shiftbook compile` + `shiftbook simulate` on a small conv network with a residual block:
golden / functional / RTL (tiny preset), corrupted weights, one-line errors."""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from shiftbook import numerics as nx
from shiftbook.cli import main
from shiftbook.sw.bundle import load_bundle, sign_manifest
from shiftbook.sw.frontend import export_module, save_pt2
from shiftbook.sw.reference import run_graph
from shiftbook.timing import estimate

SHAPE = (2, 8, 8)


class Net(nn.Module):
    """conv+ReLU, a residual block (conv+ReLU, conv + identity shortcut, ReLU), strided 1x1."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 4, 3, padding=1)
        self.c4 = nn.Conv2d(4, 6, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        z = torch.relu(self.c2(y))
        z = torch.relu(self.c3(z) + y)
        return self.c4(z)


class Sig(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 4, 3)
        self.act = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


# (name, op, output shape, MACs)
LAYERS = [("c1", "conv2d", [4, 8, 8], 4 * 8 * 8 * 2 * 9),
          ("c2", "conv2d", [4, 8, 8], 4 * 8 * 8 * 4 * 9),
          ("c3", "conv2d", [4, 8, 8], 4 * 8 * 8 * 4 * 9),
          ("c4", "conv2d", [6, 4, 4], 6 * 4 * 4 * 4)]
TINY_PES = 4


def _pt2(path: Path, cls: type[nn.Module], shape: tuple[int, int, int] = SHAPE) -> Path:
    torch.manual_seed(0)
    return save_pt2(export_module(cls().eval(), shape), path)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("net")
    pt2 = _pt2(d / "net.pt2", Net)
    out = d / "bundle"
    assert main(["compile", str(pt2), "--config", "tiny", "--calib", "4", "-o", str(out)]) == 0
    return out


def _json(capsys, argv: list[str]) -> tuple[int, dict]:
    rc = main(argv)
    out = capsys.readouterr().out
    assert out.count("\n") == 1, out
    return rc, json.loads(out)


def test_compile_summary_and_json(capsys, tmp_path, bundle):
    pt2 = _pt2(tmp_path / "net.pt2", Net)
    rc, rec = _json(capsys, ["compile", str(pt2), "--config", "tiny", "--calib", "4",
                             "-o", str(tmp_path / "b"), "--json"])
    assert rc == 0 and rec["config"] == "tiny" and rec["calibration"] == "random"
    got = [(r["name"], r["op"], r["shape"], r["macs"]) for r in rec["layers"]]
    assert got == LAYERS
    assert [r["ideal_cycles"] for r in rec["layers"]] == \
        [math.ceil(m / TINY_PES) for *_, m in LAYERS]
    assert [r["residual"] for r in rec["layers"]] == [None, None, "c1", None]
    assert all(r["format"] == "shift" for r in rec["layers"])
    # Deterministic: the same model and options give the same bundle bytes.
    for f in ("memory.bin", "manifest.json"):
        a = json.loads((tmp_path / "b" / f).read_text()) if f.endswith(".json") else \
            (tmp_path / "b" / f).read_bytes()
        b = json.loads((bundle / f).read_text()) if f.endswith(".json") else \
            (bundle / f).read_bytes()
        assert a == b
    # The human table.
    main(["compile", str(pt2), "--config", "tiny", "--calib", "4", "-o", str(tmp_path / "b")])
    out = capsys.readouterr().out
    assert "c3" in out and "conv2d +res" in out and "9216" in out and "23424 MACs" in out


@pytest.mark.parametrize("level", ["golden", "functional"])
def test_simulate_levels_json(capsys, bundle, level):
    rc, rec = _json(capsys, ["simulate", str(bundle), "--level", level, "--seed", "3",
                             "--json"])
    assert rc == 0 and rec["bit_exact"] is True and rec["mismatches"] == 0
    assert rec["level"] == level and rec["first_mismatch"] is None
    assert [lay["name"] for lay in rec["layers"]] == [n for n, *_ in LAYERS]
    est = estimate(load_bundle(bundle))
    assert rec["cycles"] == est.total
    assert [lay["cycles"] for lay in rec["layers"]] == [lc.cycles for lc in est.layers]
    for lay, (_, _, shape, macs) in zip(rec["layers"], LAYERS, strict=True):
        assert lay["bit_exact"] and lay["shape"] == shape and lay["macs"] == macs
        assert lay["ideal_cycles"] == math.ceil(macs / TINY_PES) <= lay["cycles"]
    if level == "functional":
        assert rec["functional_cycles"] > rec["ideal_cycles"]


def test_simulate_dump_and_inputs(capsys, bundle, tmp_path):
    b = load_bundle(bundle)
    x = np.random.default_rng(3).integers(-128, 128, SHAPE)
    rc = main(["simulate", str(bundle), "--seed", "3", "--dump-dir", str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert rc == 0 and "bit-exact: yes" in out
    ref = run_graph(b.graph(), {"x": x})
    for side in ("golden", "functional"):
        assert np.array_equal(np.load(tmp_path / "d" / side / "x.npy"), x)
        for name, *_ in LAYERS:
            assert np.array_equal(np.load(tmp_path / "d" / side / f"{name}.npy"), ref[name])
    # The same values from a file (int8) give the same run; float values are quantized.
    np.save(tmp_path / "x.npy", x.astype(np.int8))
    _, rec = _json(capsys, ["simulate", str(bundle), "--input", str(tmp_path / "x.npy"),
                            "--dump-dir", str(tmp_path / "e"), "--json"])
    assert rec["bit_exact"] and rec["input_source"] == "file"
    assert np.array_equal(np.load(tmp_path / "e" / "golden" / "c4.npy"), ref["c4"])
    frac = b.tensors["x"].frac
    np.save(tmp_path / "f.npy", (x * 2.0 ** -frac)[None])
    _, rec = _json(capsys, ["simulate", str(bundle), "--input", str(tmp_path / "f.npy"),
                            "--dump-dir", str(tmp_path / "f"), "--json"])
    assert np.array_equal(np.load(tmp_path / "f" / "golden" / "x.npy"), x)


def _corrupt(src: Path, dst: Path, layer: str) -> tuple[int, int]:
    """Copy the bundle with the first weight byte of ``layer`` changed to the code whose value
    differs most from the original; the manifest's sha256 is fixed so that it loads."""
    import shutil

    shutil.copytree(src, dst)
    man = json.loads((dst / "manifest.json").read_text())
    lay = next(lay for lay in man["layers"] if lay["name"] == layer)
    eb = man["config"]["exp_bits"]
    mem = bytearray((dst / "memory.bin").read_bytes())
    addr = lay["weight_addr"]
    old = mem[addr]
    ov = int(nx.decode_shift(np.array(old), eb))
    new = max(range(1 << (eb + 2)),
              key=lambda c: abs(int(nx.decode_shift(np.array(c), eb)) - ov))
    mem[addr] = new
    (dst / "memory.bin").write_bytes(bytes(mem))
    man["memory"]["sha256"] = hashlib.sha256(bytes(mem)).hexdigest()
    sign_manifest(man)
    (dst / "manifest.json").write_text(json.dumps(man, indent=1, sort_keys=True) + "\n")
    return old, new


def test_corrupted_weight_names_the_layer(capsys, bundle, tmp_path):
    old, new = _corrupt(bundle, tmp_path / "bad", "c2")
    assert old != new
    rc, rec = _json(capsys, ["simulate", str(tmp_path / "bad"), "--seed", "1", "--json"])
    assert rc == 1 and rec["bit_exact"] is False
    flags = {lay["name"]: lay["bit_exact"] for lay in rec["layers"]}
    assert flags["c1"] is True and flags["c2"] is False
    m = rec["first_mismatch"]
    assert m["layer_name"] == "c2" and m["layer"] == 1 and m["expected"] != m["got"]
    assert m["c"] == 0        # the changed byte is output channel 0's weight
    # The expected value is golden's, the other the functional simulator's.
    rc = main(["simulate", str(tmp_path / "bad"), "--seed", "1", "--dump-dir",
               str(tmp_path / "d")])
    out = capsys.readouterr().out
    assert rc == 1 and "bit-exact: NO" in out and "(c2)" in out
    e = np.load(tmp_path / "d" / "golden" / "c2.npy")
    g = np.load(tmp_path / "d" / "functional" / "c2.npy")
    assert e[m["c"], m["y"], m["x"]] == m["expected"] and g[m["c"], m["y"], m["x"]] == m["got"]


def test_unsupported_op_is_one_line_and_writes_nothing(capsys, tmp_path):
    pt2 = _pt2(tmp_path / "sig.pt2", Sig)
    rc = main(["compile", str(pt2), "--config", "tiny", "-o", str(tmp_path / "out")])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == "" and cap.err.count("\n") == 1
    assert "aten.sigmoid.default" in cap.err and "module 'act' (Sigmoid)" in cap.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sig.pt2"]


class Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def test_shape_the_core_cannot_take_is_one_line(capsys, tmp_path):
    # One output row of 4096 bytes cannot fit the tiny core's 2048-byte OUT buffer.
    pt2 = _pt2(tmp_path / "wide.pt2", Wide, (1, 1, 4096))
    rc = main(["compile", str(pt2), "--config", "tiny", "--calib", "2", "-o",
               str(tmp_path / "out")])
    cap = capsys.readouterr()
    assert rc == 2 and cap.out == "" and cap.err.count("\n") == 1, cap.err
    assert "layer 'conv'" in cap.err and "does not fit" in cap.err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wide.pt2"]


@pytest.mark.parametrize("argv, msg", [
    (["compile", "nonexistent-model", "-o", "{tmp}/o"], "unknown model 'nonexistent-model'"),
    (["compile", "resnet8", "--calib", "0", "-o", "{tmp}/o"], "--calib must be a positive"),
    (["compile", "resnet8", "--config", "nope", "-o", "{tmp}/o"], "neither a preset"),
    (["simulate", "{tmp}/missing"], "does not exist"),
    (["simulate", "{bundle}", "--level", "spice"], "unknown --level 'spice'"),
    (["simulate", "{bundle}", "--input", "{tmp}/wrong.npy"], "has shape (3, 8, 8)"),
    (["simulate", "{bundle}", "--input", "{tmp}/big.npy"], "outside int8"),
])
def test_bad_input_is_one_line(capsys, tmp_path, bundle, argv, msg):
    np.save(tmp_path / "wrong.npy", np.zeros((3, 8, 8), np.int8))
    np.save(tmp_path / "big.npy", np.full(SHAPE, 300, np.int64))
    argv = [a.format(tmp=tmp_path, bundle=bundle) for a in argv]
    rc = main(argv)
    cap = capsys.readouterr()
    assert rc == 2 and cap.err.count("\n") == 1 and msg in cap.err, cap.err
    assert not (tmp_path / "o").exists()


@pytest.fixture(scope="module")
def tiny_rtl():
    from shiftbook.config import PRESETS
    from shiftbook.sim.rtl import runner
    from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

    try:
        setup_verilator_env()
        from shiftbook.hw.verilog import generate_verilog  # noqa: F401
    except (ToolchainError, ImportError) as e:
        pytest.skip(str(e))
    return runner.build(PRESETS["tiny"])


def test_simulate_rtl_tiny(capsys, bundle, tiny_rtl, tmp_path):
    rc, rec = _json(capsys, ["simulate", str(bundle), "--level", "rtl", "--seed", "5",
                             "--dump-dir", str(tmp_path / "d"), "--json"])
    assert rc == 0 and rec["bit_exact"] is True and rec["cycles_source"] == "rtl"
    assert [lay["name"] for lay in rec["layers"]] == [n for n, *_ in LAYERS]
    ref = run_graph(load_bundle(bundle).graph(),
                    {"x": np.random.default_rng(5).integers(-128, 128, SHAPE)})
    for name, *_ in LAYERS:
        assert np.array_equal(np.load(tmp_path / "d" / "rtl" / f"{name}.npy"), ref[name])
    cyc = [lay["cycles"] for lay in rec["layers"]]
    assert all(lay["ideal_cycles"] <= lay["cycles"] for lay in rec["layers"])
    assert sum(cyc) <= rec["cycles"] <= sum(cyc) + 16     # MARKs split the whole run
    # The estimator models these rules cycle-exactly (docs/estimates.md).
    for lay in rec["layers"]:
        assert abs(lay["cycles"] - lay["estimate_cycles"]) <= 0.02 * lay["cycles"]


class Gray(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


def test_one_channel_32x32_model_calibrates_on_digits(capsys, tmp_path):
    from shiftbook.sw.data import load_digits
    from shiftbook.sw.frontend import quantize_input

    pt2 = _pt2(tmp_path / "gray.pt2", Gray, (1, 32, 32))
    rc, rec = _json(capsys, ["compile", str(pt2), "--config", "tiny", "--calib", "3", "-o",
                             str(tmp_path / "b"), "--json"])
    assert rc == 0 and rec["calibration"] == "digits" and rec["calib_images"] == 3
    b = load_bundle(tmp_path / "b")
    # The bundle's stored input is the first calibration image, quantized.
    x0 = load_digits(size=32, channels=1).x_train[:1]
    want = np.asarray(quantize_input(x0, b.tensors["x"].frac))[0]
    assert np.array_equal(b.inputs()["x"], want) and np.abs(want).max() > 0
