import numpy as np
import pytest
import torch

from shiftbook import numerics as nx
from shiftbook.sw.compress import (
    CodebookFormat,
    CompressError,
    CompressOptions,
    ShiftFormat,
    compress,
    pq_plan,
)
from shiftbook.sw.compress.kmeans import (
    assign,
    clamp_k,
    kmeans,
    output_error,
    pq_em,
    split_empty,
)


def test_clamp_k_matches_reference_rule():
    # largest power of two strictly below n_sub / 4, never above k
    assert clamp_k(256, 256) == 32
    assert clamp_k(256, 1024) == 128
    assert clamp_k(256, 1025) == 256
    assert clamp_k(256, 4096) == 256
    assert clamp_k(2048, 160) == 32
    assert clamp_k(256, 5) == 2


def test_empty_cluster_is_split():
    x = torch.tensor([[0.0], [0.1], [0.2], [10.0], [10.1]], dtype=torch.float64)
    c = torch.tensor([[0.1], [10.05], [1000.0]], dtype=torch.float64)   # cluster 2 empty
    a = assign(x, c)
    assert torch.bincount(a, minlength=3)[2] == 0
    c2, a2, splits = split_empty(x, c, a, 1e-3, torch.Generator().manual_seed(0))
    assert splits >= 1
    assert bool((torch.bincount(a2, minlength=3) > 0).all())
    # the split came from the most populated cluster (the one near 0.1)
    assert abs(float(c2[2, 0]) - 0.1) < 0.01


def test_kmeans_recovers_separated_clusters():
    g = torch.Generator().manual_seed(1)
    centers = torch.tensor([[-5.0, 0.0], [0.0, 5.0], [5.0, 0.0]], dtype=torch.float64)
    x = torch.cat([c + 0.1 * torch.randn(50, 2, generator=g, dtype=torch.float64)
                   for c in centers])
    c, a = kmeans(x, 3, iters=20, seed=0)
    found = sorted(c.round().tolist())
    assert found == sorted(centers.tolist())


def test_kmeans_is_seeded_and_never_leaves_a_cluster_empty():
    g = torch.Generator().manual_seed(2)
    x = torch.randn(3000, 1, generator=g, dtype=torch.float64) * 0.05
    c1, a1 = kmeans(x, 16, iters=30, seed=3)
    c2, a2 = kmeans(x, 16, iters=30, seed=3)
    assert torch.equal(c1, c2) and torch.equal(a1, a2)
    assert c1.dtype == torch.float64 and a1.dtype == torch.int64 and c1.shape == (16, 1)
    assert bool((torch.bincount(a1, minlength=16) > 0).all())
    assert torch.equal(a1, assign(x, c1))                  # assignments match the centroids
    # fewer distinct values than k: no error, every distinct value its own cluster
    dup = torch.tensor([[0.0]] * 5 + [[1.0]] * 5 + [[2.0]] * 5, dtype=torch.float64)
    c, a = kmeans(dup, 4, iters=10, seed=0)
    assert c.shape == (4, 1) and int((torch.bincount(a, minlength=4) > 0).sum()) == 3
    assert float(((dup - c[a]) ** 2).sum()) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="larger than the number of vectors"):
        kmeans(dup, 16)


def test_activation_aware_beats_weight_kmeans_on_output_error():
    g = torch.Generator().manual_seed(0)
    d, r, cout = 4, 32, 16
    # strongly anisotropic, correlated inputs: some block coordinates matter far more
    mix = torch.randn(d, d, generator=g, dtype=torch.float64) * torch.tensor(
        [4.0, 1.0, 0.2, 0.05], dtype=torch.float64)
    x = (torch.randn(2048, r // d, d, generator=g, dtype=torch.float64) @ mix).reshape(2048, r)
    w = torch.randn(cout, r, generator=g, dtype=torch.float64)
    v = w.reshape(-1, d)
    k = 8

    def sample(i):
        return x.reshape(-1, d)

    ca, aa, _ = pq_em(v, k, sample_x=sample, iters=30, seed=0)
    cw, aw, _ = pq_em(v, k, sample_x=None, iters=30, seed=0)
    ea = output_error(x, w, ca[aa].reshape(cout, r))
    ew = output_error(x, w, cw[aw].reshape(cout, r))
    assert ea < 0.8 * ew
    # and plain k-means wins on the weight error, as it should
    assert float(((cw[aw] - v) ** 2).sum()) <= float(((ca[aa] - v) ** 2).sum())


def test_pq_plan_presets_and_errors(resnet8):
    plan = pq_plan(resnet8, CompressOptions())
    assert "conv1" not in plan
    assert plan["layer1.0.conv1"] == (32, 9)           # 256 sub-vectors -> k 32
    assert plan["layer3.0.conv2"] == (256, 9)          # 4096 sub-vectors
    assert plan["layer3.0.downsample.0"] == (64, 4)
    assert plan["fc"] == (32, 4)                       # 160 sub-vectors
    large = pq_plan(resnet8, CompressOptions(preset="large"))
    assert large["layer2.0.conv2"] == (64, 18)         # 512 sub-vectors
    assert large["layer2.0.downsample.0"][1] == 4
    with pytest.raises(CompressError, match="does not divide layer layer2.0.downsample.0"):
        pq_plan(resnet8, CompressOptions(d=9))
    with pytest.raises(CompressError, match="larger than the number of sub-vectors"):
        pq_plan(resnet8, CompressOptions(k=16384, d=4))
    with pytest.raises(CompressError, match="larger than the number of sub-vectors"):
        pq_plan(resnet8, CompressOptions(k=200, clamp=False))
    with pytest.raises(CompressError, match="max_k=256"):
        pq_plan(resnet8, CompressOptions(k=512, max_k=256))
    with pytest.raises(CompressError, match="max_d"):
        pq_plan(resnet8, CompressOptions(preset="large", max_d=9))
    with pytest.raises(CompressError, match="preset"):
        pq_plan(resnet8, CompressOptions(preset="medium"))


def _is_shift_value(codes, exp_bits):
    v = np.abs(nx.decode_shift(np.asarray(codes), exp_bits))
    return set(np.unique(v)) <= {0} | {1 << e for e in range(1 << exp_bits)}


def test_kmeans_codebooks_are_shift_codes(tiny_loaders, resnet8):
    tr, te = tiny_loaders
    cm = compress(resnet8, "kmeans", tr, te,
                  CompressOptions(k=8, epochs=0, progress=False, mlq_group=4))
    for name, fmt in cm.formats.items():
        assert isinstance(fmt, CodebookFormat) and fmt.d == 1 and fmt.k == 8
        assert _is_shift_value(fmt.codebook, 4)
        w = cm.model.get_submodule(name).weight
        assert torch.equal(w, fmt.decode())
        assert len(torch.unique(w)) <= 8
    assert any(r["step"] == "slq group 1 50%" for r in cm.meta["steps"])


@pytest.mark.parametrize("fold_bn", [True, False])
def test_pq_end_to_end_tiny(tiny_loaders, resnet8, fold_bn):
    tr, te = tiny_loaders
    opts = CompressOptions(progress=False, em_iters=4, layer_ft_iters=1, global_ft_epochs=1,
                           shift_ft_epochs=1, n_activations=32, n_rows=256, fold_bn=fold_bn)
    cm = compress(resnet8, "pq", tr, te, opts)
    assert isinstance(cm.formats["conv1"], ShiftFormat)
    f = cm.formats["layer3.0.conv2"]
    assert isinstance(f, CodebookFormat) and (f.k, f.d) == (256, 9)
    assert f.indices.shape == (64, 64) and f.index_bits == 8
    assert len(set(f.w_frac.tolist())) == 1
    assert _is_shift_value(f.codebook, 4)
    steps = [r["step"] for r in cm.meta["steps"]]
    for s in ("pq layer1.0.conv1", "pq fc", "codewords -> shift codes",
              "shift-aware finetune", "hardware weights"):
        assert s in steps
    # BN folded: rounding comes before the (straight-through) global fine-tune, and the biases
    # are recalibrated instead of BN statistics
    assert ("pq global finetune" in steps) is not fold_bn
    assert ("bias recalibrated" if fold_bn else "bn recalibrated") in steps
    assert ("bn folded" in steps) is fold_bn
    errs = [r["out_err"] for r in cm.meta["steps"] if "out_err" in r]
    assert len(errs) == 9 and all(0 <= e < 1 for e in errs)
    cm.check()
