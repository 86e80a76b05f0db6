"""ResNet-8 / ResNet-20 (32x32, seeded random weights of the built-in models) end to end in
RTL: `shiftbook compile` -> bundle -> Verilator core, every layer bit-exact against golden
(``sim.network.simulate_bundle``), with shift weights (the built-in name: 3 input channels,
post-training shift codes) and with codebook weights (1 input channel) from
`shiftbook compress` (kmeans: scalar codebooks, d = 1; pq: d = 9 / 4 sub-vector codebooks), run
with tiny settings on 64 seeded random images (compression quality is irrelevant here: the
test checks that the compressed formats reach the hardware as WFMT = 1 and decode bit-exactly).

Defaults use the cached ``small`` core build (each test 2-16 s on the shared 2-core machine);
the ``tiny`` preset (2x2 PEs), ResNet-20 kmeans and the strict-2% codebook cycle check are
``slow``. Per-layer RTL cycles are checked against ``shiftbook.timing``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from shiftbook.cli import main
from shiftbook.sw.bundle import load_bundle

pytestmark = pytest.mark.rtl

N_CLASSES = 10
SHAPE = (1, 32, 32)


def _rtl(preset: str) -> None:
    from shiftbook.config import PRESETS
    from shiftbook.sim.rtl import runner
    from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

    try:
        setup_verilator_env()
        from shiftbook.hw.verilog import generate_verilog  # noqa: F401
    except (ToolchainError, ImportError) as e:
        pytest.skip(str(e))
    runner.build(PRESETS[preset])     # cached under build/rtl


@pytest.fixture(scope="module")
def small_rtl() -> None:
    _rtl("small")


@pytest.fixture(scope="module")
def tiny_rtl() -> None:
    _rtl("tiny")


def _compress(name: str, method: str, path: Path) -> dict[str, Any]:
    """`shiftbook compress` with tiny settings on seeded random data; returns the formats."""
    from torch.utils.data import DataLoader, TensorDataset

    from shiftbook.sw.compress import CompressOptions, compress, save_compressed
    from shiftbook.sw.models import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(64, *SHAPE, generator=g)
        y = torch.randint(0, N_CLASSES, (64,), generator=g)
        dl = DataLoader(TensorDataset(x, y), batch_size=32)
        m = build_model(name, num_classes=N_CLASSES, in_channels=1, seed=0)
        opts = CompressOptions(epochs=0, k=16, fc_k=16, progress=False, bn_batches=1,
                               max_k=256, max_d=9, n_activations=8, n_rows=256, em_iters=2,
                               layer_ft_iters=1, global_ft_epochs=0, shift_ft_epochs=0)
        cm = compress(m, method, dl, dl, opts, model_name=name,
                      model_args={"num_classes": N_CLASSES, "in_channels": 1})
    finally:
        torch.set_num_threads(threads)
    save_compressed(path, cm)
    return dict(cm.formats)


def _compile(model: str, out: Path, config: str) -> Path:
    assert main(["compile", model, "--config", config, "--calib", "4", "-o", str(out)]) == 0
    return out


def _check_bit_exact(bundle: Path) -> dict[str, Any]:
    from shiftbook.sim.network import simulate_bundle

    run = simulate_bundle(bundle, "rtl")
    rec = run.record
    bad = [(lay["name"], lay["mismatches"]) for lay in rec["layers"] if not lay["bit_exact"]]
    assert rec["bit_exact"] and not bad, (bad, rec.get("first_mismatch_text"))
    # every layer's tensor really compared: golden is non-trivial and equals the RTL result
    graph = load_bundle(bundle).graph()
    assert [lay["name"] for lay in rec["layers"]] == [op.name for op in graph.ops]
    for op in graph.ops:
        np.testing.assert_array_equal(run.got[op.output], run.expected[op.output])
    assert any(np.any(run.expected[op.output] != 0) for op in graph.ops[-3:])
    return rec


def _wfmts(bundle: Path) -> dict[str, tuple[int, int, int] | None]:
    """Layer name -> (wfmt, k, d) of every weighted layer of the compiled program."""
    b = load_bundle(bundle)
    out: dict[str, tuple[int, int, int] | None] = {}
    for lay in b.layers:
        w = lay.weights
        if lay.op in ("conv2d", "linear"):
            out[lay.name] = (w.wfmt, w.k or 0, w.d or 0)
    return out


def _check_codebooks(bundle: Path, formats: dict[str, Any]) -> int:
    """Every codebook layer of ``formats`` is compiled as WFMT = 1 with its own k, d, codebook
    and indices, and the op's codes are the decoded codebook; returns how many."""
    graph = load_bundle(bundle).graph()
    ops = {op.name: op for op in graph.ops}
    got = _wfmts(bundle)
    n = 0
    for name, fmt in formats.items():
        if getattr(fmt, "kind", "") != "codebook":
            assert got[name][0] == 0, name
            continue
        assert got[name] == (1, int(fmt.k), int(fmt.d)), (name, got[name])
        op = ops[name]
        np.testing.assert_array_equal(op.weight_format.codebook, fmt.codebook.numpy())
        np.testing.assert_array_equal(op.weight_format.indices, fmt.indices.numpy())
        codes = fmt.codes().numpy().reshape(op.weight.shape)
        np.testing.assert_array_equal(op.weight, codes)
        n += 1
    return n


# ---------------------------------------------------------------- shift weights
def test_resnet8_shift_rtl_small(tmp_path, small_rtl):
    b = _compile("resnet8", tmp_path / "b", "small")
    assert all(v[0] == 0 for v in _wfmts(b).values())
    rec = _check_bit_exact(b)
    assert len(rec["layers"]) == 11       # 9 convs, the average pool, fc


def test_resnet20_shift_rtl_small(tmp_path, small_rtl):
    b = _compile("resnet20", tmp_path / "b", "small")
    rec = _check_bit_exact(b)
    assert len(rec["layers"]) == 23       # 21 convs, the average pool, fc


@pytest.mark.slow
def test_resnet8_shift_rtl_tiny(tmp_path, tiny_rtl):
    _check_bit_exact(_compile("resnet8", tmp_path / "b", "tiny"))


# ---------------------------------------------------------------- codebook weights
@pytest.mark.parametrize("method", ["kmeans", "pq"])
def test_resnet8_codebook_rtl_small(tmp_path, small_rtl, method):
    fmts = _compress("resnet8", method, tmp_path / "c.pt")
    b = _compile(str(tmp_path / "c.pt"), tmp_path / "b", "small")
    n = _check_codebooks(b, fmts)
    assert n == (10 if method == "kmeans" else 9)    # pq keeps the first conv as shift codes
    _check_bit_exact(b)


@pytest.mark.parametrize("method", [pytest.param("kmeans", marks=pytest.mark.slow), "pq"])
def test_resnet20_codebook_rtl_small(tmp_path, small_rtl, method):
    fmts = _compress("resnet20", method, tmp_path / "c.pt")
    b = _compile(str(tmp_path / "c.pt"), tmp_path / "b", "small")
    assert _check_codebooks(b, fmts) == (22 if method == "kmeans" else 21)
    _check_bit_exact(b)


@pytest.mark.slow
def test_resnet8_pq_rtl_tiny(tmp_path, tiny_rtl):
    fmts = _compress("resnet8", "pq", tmp_path / "c.pt")
    b = _compile(str(tmp_path / "c.pt"), tmp_path / "b", "tiny")
    assert _check_codebooks(b, fmts) == 9
    _check_bit_exact(b)


# ---------------------------------------------------------------- cycles
def _cycles(tmp_path: Path, weights: str) -> tuple[dict[str, Any], Any]:
    from shiftbook.sim.network import simulate_bundle
    from shiftbook.timing import estimate

    if weights == "shift":
        b = _compile("resnet8", tmp_path / "b", "small")
    else:
        _compress("resnet8", weights, tmp_path / "c.pt")
        b = _compile(str(tmp_path / "c.pt"), tmp_path / "b", "small")
    rec = simulate_bundle(b, "rtl").record
    est = estimate(load_bundle(b))
    assert [e.name for e in est.layers] == [lay["name"] for lay in rec["layers"]]
    for lay, e in zip(rec["layers"], est.layers, strict=True):
        assert lay["estimate_cycles"] == e.cycles
        assert 0 < lay["ideal_cycles"] <= lay["cycles"]
    return rec, est


def _off(rec: dict[str, Any], est: Any, slack: int) -> list[tuple[str, int, int]]:
    return [(lay["name"], e.cycles, lay["cycles"])
            for lay, e in zip(rec["layers"], est.layers, strict=True)
            if abs(e.cycles - lay["cycles"]) > max(0.02 * lay["cycles"], slack)]


def test_resnet8_rtl_cycles_match_estimate(tmp_path, small_rtl):
    """Per-layer RTL cycles (between MARKs) within 2% of shiftbook.timing.estimate."""
    rec, est = _cycles(tmp_path, "shift")
    assert _off(rec, est, 0) == []
    assert abs(est.total - rec["cycles"]) <= 0.02 * rec["cycles"]


def test_resnet8_codebook_rtl_cycles_match_estimate(tmp_path, small_rtl):
    """pq codebook layers (LOAD CB, WFMT=1 tiles): per layer within 2% of the cycle model."""
    rec, est = _cycles(tmp_path, "pq")
    assert _off(rec, est, 0) == []
    assert abs(est.total - rec["cycles"]) <= 0.02 * rec["cycles"]
