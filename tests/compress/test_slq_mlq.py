"""SLQ in the seed's order and MLQ as its own method (issue 16, items 3 and 4).

SLQ's loss-based partition quantizes the larger-loss clusters first (the unit test on
``partition`` / ``cluster_step`` and the first step of a real run); MLQ freezes every quantized
layer while the later layers retrain; MLQ at k = 3 is ternary (three values per layer, one of
them 0); ``shiftbook compress --method mlq`` works and an MLQ model compiles bit-exact.
"""

from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from shiftbook import numerics as nx
from shiftbook.cli import main
from shiftbook.sw.compress import (
    CodebookFormat,
    CompressError,
    CompressOptions,
    compress,
    load_compressed,
    model_size,
    save_compressed,
)
from shiftbook.sw.models import build_model, save_checkpoint

# the module itself (the package re-exports its function ``slq`` under the same name)
slq_mod = importlib.import_module("shiftbook.sw.compress.slq")


def _clustered(centres: list[float], n: int = 40, noise: float = 1e-3) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    return torch.cat([c + noise * torch.randn(n, 1, generator=g, dtype=torch.float64)
                      for c in centres])


# six tight clusters at scale 2**-4 (exp_bits 4: levels 2**(e-4), e in 0..15), log rounding:
# three sit on shift values (loss ~0), three far from one (1.4 -> 1.0, 0.75 -> 1.0, -0.7 -> -0.5)
ON_LEVEL = [1.0, 0.5, -1.0]
OFF_LEVEL = [1.4, 0.75, -0.7]


def _chosen_centres(vals, a, chosen) -> set[float]:
    return {round(float(vals[a == ci].mean()), 2) for ci in chosen.tolist()}


def test_partition_ranks_by_loss():
    loss = torch.tensor([0.1, 0.5, 0.0, 0.3, 0.5])
    assert slq_mod.partition(loss, 2).tolist() == [1, 4]             # default: larger first
    assert slq_mod.partition(loss, 2, "loss-desc").tolist() == [1, 4]
    assert slq_mod.partition(loss, 2, "loss-asc").tolist() == [2, 0]
    with pytest.raises(CompressError, match="unknown SLQ order 'random'"):
        slq_mod.partition(loss, 2, "random")
    assert slq_mod.ORDER == "loss-desc"                              # what SLQ and MLQ use


@pytest.mark.parametrize("order,expect", [("loss-desc", OFF_LEVEL), ("loss-asc", ON_LEVEL)])
def test_first_partition_holds_the_largest_loss_clusters(order, expect):
    vals = _clustered(ON_LEVEL + OFF_LEVEL)
    chosen, a, codes, tgt, loss = slq_mod.cluster_step(vals, 6, 3, 4, CompressOptions(),
                                                       seed=0, order=order)
    assert _chosen_centres(vals, a, chosen) == {round(c, 2) for c in expect}
    ranked = sorted(loss.tolist(), reverse=order == "loss-desc")
    assert sorted(loss[chosen].tolist(), reverse=order == "loss-desc") == \
        pytest.approx(ranked[:3])
    # the targets are the centroids' nearest shift values at the layer scale 2**-4
    v = nx.decode_shift(codes, 4) * 2.0 ** -4
    assert np.allclose(v, tgt.numpy())
    nearest = {1.0: 1.0, 0.5: 0.5, -1.0: -1.0, 1.4: 1.0, 0.75: 1.0, -0.7: -0.5}
    for ci in chosen.tolist():
        assert v[ci] == nearest[round(float(vals[a == ci].mean()), 2)]


def test_ternary_rule_zero_for_the_cluster_nearest_zero_only():
    opts = CompressOptions()
    vals = _clustered([-1.0, 0.2, 1.0])
    _, a, codes, tgt, _ = slq_mod.cluster_step(vals, 3, 3, 4, opts, seed=0, ternary=True)
    centre = {round(float(vals[a == i].mean()), 1): float(tgt[i]) for i in range(3)}
    assert centre == {-1.0: -1.0, 0.2: 0.0, 1.0: 1.0}      # 0.2 would round to 0.25, not 0
    # the layer already holds 0: a centroid that rounds to zero takes the smallest level
    tiny = _clustered([0.001, 1.0], noise=1e-5)
    _, a, codes, tgt, _ = slq_mod.cluster_step(tiny, 2, 2, 4, opts, seed=0, ternary=True,
                                               zero_taken=True)
    assert sorted(tgt.tolist()) == [2.0 ** -4, 1.0]
    plain = slq_mod.cluster_step(tiny, 2, 2, 4, opts, seed=0)[3]
    assert sorted(plain.tolist()) == [0.0, 1.0]            # without the rule it would be 0


def test_slq_run_quantizes_largest_loss_first(tiny_loaders, resnet8, monkeypatch):
    """In a real SLQ run (default options) every layer's first step quantizes the clusters
    with the largest losses."""
    seen = []
    orig = slq_mod.cluster_step

    def spy(vals, k_left, n_q, frac, opts, **kw):
        out = orig(vals, k_left, n_q, frac, opts, **kw)
        seen.append((n_q, out[0], out[4], kw["order"]))
        return out

    monkeypatch.setattr(slq_mod, "cluster_step", spy)
    tr, te = tiny_loaders
    compress(resnet8, "kmeans", tr, te, CompressOptions(k=8, epochs=0, progress=False))
    first = seen[:10]                                   # 10 layers, step 1 (50%: 4 of 8)
    assert len(first) == 10
    for n_q, chosen, loss, order in first:
        assert n_q == 4 and order == "loss-desc"
        assert sorted(loss[chosen].tolist()) == sorted(loss.tolist())[-4:]


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters() if n.endswith("weight")}


def test_mlq_freezes_quantized_layers_while_later_layers_change(tiny_loaders, resnet8,
                                                               monkeypatch):
    calls = []
    orig = slq_mod.train

    def spy(model, loader, cfg, **kw):
        before = _snapshot(model)
        out = orig(model, loader, cfg, **kw)
        calls.append((cfg.desc, before, _snapshot(model)))
        return out

    monkeypatch.setattr(slq_mod, "train", spy)
    tr, te = tiny_loaders
    cm = compress(resnet8, "mlq", tr, te,
                  CompressOptions(k=8, epochs=1, progress=False, mlq_group=5))
    # two groups of five layers x three width steps; after the very last step only the biases
    assert [c[0] for c in calls] == ["mlq g1 50%", "mlq g1 75%", "mlq g1 100%",
                                     "mlq g2 50%", "mlq g2 75%", "mlq biases"]
    names = list(cm.formats)
    g1, g2 = names[:5], names[5:]
    key = {n: f"{n}.weight" for n in names}
    for _, before, after in calls[2:]:                 # group 1 fully quantized
        for n in g1:
            assert torch.equal(before[key[n]], after[key[n]]), n
    _, before, after = calls[-1]                       # the bias fine-tune: no weight moves
    assert all(torch.equal(before[key[n]], after[key[n]]) for n in names)
    # while group 1 was frozen, the later (still float) layers retrained
    _, before, after = calls[2]
    assert all(not torch.equal(before[key[n]], after[key[n]]) for n in g2)
    # and what group 1 froze is what the model keeps
    final = _snapshot(cm.model)
    for n in g1:
        assert torch.equal(calls[2][2][key[n]], final[key[n]])
    assert [r["step"] for r in cm.meta["steps"]][2] == "mlq group 1 50%"
    assert cm.meta["method"] == "mlq"


def test_mlq_k3_is_ternary(tiny_loaders, resnet8):
    tr, te = tiny_loaders
    cm = compress(resnet8, "mlq", tr, te, CompressOptions(k=3, epochs=0, progress=False))
    sizes = {ls.name: ls for ls in model_size(cm).layers}
    for name, fmt in cm.formats.items():
        assert isinstance(fmt, CodebookFormat) and (fmt.k, fmt.d) == (3, 1)
        assert fmt.index_bits == 2
        w = cm.model.get_submodule(name).weight
        assert torch.equal(w, fmt.decode())
        vals = torch.unique(w).tolist()
        assert len(vals) == 3 and 0.0 in vals, (name, vals)
        assert vals[0] < 0 < vals[2]
        book = nx.decode_shift(fmt.codebook.numpy().reshape(-1), 4)
        assert sorted(book.tolist()).count(0) == 1
        assert sizes[name].bits_per_weight == pytest.approx(math.log2(3))


def test_mlq_bad_options(tiny_loaders, resnet8):
    tr, te = tiny_loaders
    with pytest.raises(CompressError, match="mlq is scalar weight sharing"):
        compress(resnet8, "mlq", tr, te, CompressOptions(d=4, progress=False))
    with pytest.raises(CompressError, match="mlq_group=0"):
        compress(resnet8, "mlq", tr, te, CompressOptions(mlq_group=0, progress=False))


def test_cli_accepts_method_mlq(tmp_path, capsys):
    m = build_model("resnet8", num_classes=10, in_channels=1, seed=1)
    save_checkpoint(tmp_path / "f.pt", m, name="resnet8",
                    model_args={"num_classes": 10, "in_channels": 1})
    rc = main(["compress", "resnet8", "--weights", str(tmp_path / "f.pt"), "--method", "mlq",
               "--epochs", "0", "-o", str(tmp_path / "m.pt"), "--quiet"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "codebook k=16 d=1" in out and "mlq group 10 100%" in out   # layer by layer
    cm = load_compressed(tmp_path / "m.pt")
    assert cm.meta["method"] == "mlq"
    assert all(isinstance(f, CodebookFormat) and f.k == 16 for f in cm.formats.values())


@pytest.mark.parametrize("level", ["functional", pytest.param("rtl", marks=pytest.mark.slow)])
def test_mlq_ternary_model_compiles_bit_exact(tmp_path, tiny_loaders, resnet8, level):
    """Functional always; RTL (Verilator, the ``small`` build other tests cache) as slow."""
    from shiftbook import flow
    from shiftbook.sim.network import simulate_bundle

    tr, te = tiny_loaders
    cm = compress(resnet8, "mlq", tr, te, CompressOptions(k=3, epochs=0, progress=False),
                  model_name="resnet8", model_args={"num_classes": 10, "in_channels": 1})
    save_compressed(tmp_path / "t.pt", cm)
    comp = flow.compile(tmp_path / "t.pt", config="small", calib=4, output=tmp_path / "b")
    books = [op.weight_format for op in comp.graph.ops
             if getattr(op, "weight_format", None) is not None]
    assert len(books) == 10 and all(b.k == 3 for b in books)
    rec = simulate_bundle(tmp_path / "b", level).record
    assert rec["bit_exact"], rec
    assert len(rec["layers"]) >= 10 and all(lay["bit_exact"] for lay in rec["layers"])
