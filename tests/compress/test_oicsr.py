"""OICSR structured pruning (sw/compress/oicsr.py, sw/compress/prune.py): the regulariser, the
global selection under residual ties, exact surgery, pruned checkpoints, bad options, and
pruned ResNet-8 / ResNet-20 bit-exact in RTL."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from shiftbook.config import load_config
from shiftbook.sw.compress import CompressOptions, check_options, compress
from shiftbook.sw.compress.oicsr import (
    PruneOptions,
    channel_energy,
    group_vectors,
    oicsr_penalty,
    prune_model,
    select_channels,
)
from shiftbook.sw.compress.pipeline import CompressRequest, run_compress
from shiftbook.sw.compress.prune import CostModel, inner_widths, narrow, prune_groups
from shiftbook.sw.models import build_model, save_checkpoint
from shiftbook.sw.models.compressed import CompressError, load_compressed, save_compressed

ARGS = {"num_classes": 10, "in_channels": 1}


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            n = m.num_features
            m.weight.data = torch.rand(n, generator=g) + 0.5
            m.bias.data = torch.randn(n, generator=g) * 0.1
            m.running_mean = torch.randn(n, generator=g) * 0.1
            m.running_var = torch.rand(n, generator=g) + 0.5
    return model.eval()


def _random_loader(n: int = 64, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=32)


# ---------------------------------------------------------------- regulariser
def test_penalty_is_sum_of_folded_out_in_group_norms():
    m = _randomise_bn(build_model("resnet8", seed=0, **ARGS))
    total = torch.zeros((), dtype=torch.float64)
    for g in prune_groups(m):
        c1, b1 = m.get_submodule(g.conv1), m.get_submodule(g.bn1)
        c2, b2 = m.get_submodule(g.conv2), m.get_submodule(g.bn2)
        s1 = (b1.weight / torch.sqrt(b1.running_var + b1.eps)).double()
        s2 = (b2.weight / torch.sqrt(b2.running_var + b2.eps)).double()
        w1 = c1.weight.double() * s1.reshape(-1, 1, 1, 1)
        w2 = c2.weight.double() * s2.reshape(-1, 1, 1, 1)
        for i in range(c1.out_channels):
            sq = w1[i].pow(2).sum() + b1.bias[i].double() ** 2 + w2[:, i].pow(2).sum()
            total += sq.sqrt()
    assert torch.allclose(oicsr_penalty(m).double(), total, rtol=1e-5)


def test_penalty_includes_the_bn_scale_and_has_gradients():
    m = _randomise_bn(build_model("resnet8", seed=0, **ARGS))
    g = prune_groups(m)[0]
    v = group_vectors(m, g)
    m.get_submodule(g.bn1).weight.data *= 2.0    # the BN scale is part of the group
    v2 = group_vectors(m, g)
    r = m.get_submodule(g.conv1).weight[0].numel()
    assert torch.allclose(v2[:, :r], 2 * v[:, :r])
    oicsr_penalty(m).backward()
    assert m.get_submodule(g.bn1).weight.grad.abs().sum() > 0
    assert m.get_submodule(g.conv2).weight.grad.abs().sum() > 0


# ---------------------------------------------------------------- selection and surgery
def test_selection_prunes_only_block_inner_channels_weakest_first():
    m = _randomise_bn(build_model("resnet8", seed=0, **ARGS))
    g0 = prune_groups(m)[0]
    with torch.no_grad():                       # three dead channels in block 0
        m.get_submodule(g0.conv1).weight[[2, 5, 9]] = 0
        m.get_submodule(g0.bn1).bias[[2, 5, 9]] = 0
        m.get_submodule(g0.conv2).weight[:, [2, 5, 9]] = 0
    cost = CostModel(m, load_config("small"), (1, 32, 32), "macs")
    target = cost.target_cost(0.07)     # three block-0 channels: 7.25% of the MACs
    keep = select_channels(channel_energy(m), cost, target)
    assert keep[0] == [i for i in range(16) if i not in (2, 5, 9)]
    assert [len(k) for k in keep[1:]] == [32, 64]
    p = narrow(m, keep)
    assert cost.cost(inner_widths(p)) <= target
    before, after = dict(m.named_modules()), dict(p.named_modules())
    for name, mod in before.items():            # identity-tied widths never change
        if isinstance(mod, nn.Conv2d) and not name.endswith("conv1") or name == "conv1":
            assert after[name].out_channels == mod.out_channels, name
    assert p(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_surgery_is_exact_when_pruned_channels_are_zero():
    m = _randomise_bn(build_model("resnet20", seed=1, **ARGS))
    g = torch.Generator().manual_seed(3)
    keep = []
    for grp in prune_groups(m):
        w = m.get_submodule(grp.conv1).out_channels
        k = sorted(torch.randperm(w, generator=g)[: max(1, w // 2)].tolist())
        drop = [i for i in range(w) if i not in k]
        with torch.no_grad():
            m.get_submodule(grp.bn1).weight[drop] = 0
            m.get_submodule(grp.bn1).bias[drop] = 0
        keep.append(k)
    p = narrow(m, keep).eval()
    x = torch.randn(4, 1, 32, 32, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(p(x), m(x), rtol=0, atol=1e-5)
    assert inner_widths(p) == [len(k) for k in keep]
    fresh = build_model("resnet20", inner_widths=inner_widths(p), **ARGS)
    fresh.load_state_dict(p.state_dict())      # the pruned architecture rebuilds


def test_cycle_cost_pays_for_output_channels_per_column_group():
    m = build_model("resnet8", seed=0, **ARGS)
    cost = CostModel(m, load_config("small"), (1, 32, 32), "cycles")
    cols = load_config("small").cols
    rows = {r["layer"]: r for r in cost.table([16 - cols + 1, 32, 64])}
    full = {r["layer"]: r for r in cost.table([16, 32, 64])}
    assert rows["layer1.0.conv1"]["cout"] == [16, 16 - cols + 1]
    assert rows["layer1.0.conv2"]["cycles"] < full["layer1.0.conv2"]["cycles"]   # inputs pay


# ---------------------------------------------------------------- save / reload
def test_pruned_model_saves_and_reloads_with_its_widths(tmp_path):
    m = _randomise_bn(build_model("resnet8", seed=0, **ARGS))
    p = narrow(m, [list(range(11)), list(range(27)), list(range(56))])
    dl = _random_loader()
    args = {**ARGS, "inner_widths": inner_widths(p)}
    cm = compress(p, "deepshift-q", dl, dl, CompressOptions(epochs=0, progress=False,
                                                            bn_batches=1),
                  model_name="resnet8", model_args=args)
    save_compressed(tmp_path / "c.pt", cm)
    back = load_compressed(tmp_path / "c.pt")
    assert inner_widths_of(back.model) == [11, 27, 56]
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        assert torch.equal(back(x), cm.eval()(x))
    save_checkpoint(tmp_path / "f.pt", p, name="resnet8", model_args=args)
    f = build_model("resnet8", weights=tmp_path / "f.pt", **args)
    assert inner_widths(f) == [11, 27, 56]


def inner_widths_of(model: nn.Module) -> list[int]:
    return [model.get_submodule(f"layer{i}.0.conv1").out_channels for i in (1, 2, 3)]


# ---------------------------------------------------------------- invalid options
@pytest.mark.parametrize("kw, msg", [
    ({"target_cycles": 0.2, "lam": -1.0}, "--lambda -1 must be a finite number >= 0"),
    ({}, "needs exactly one of --target-cycles"),
    ({"target_cycles": 0.2, "target_macs": 0.2}, "got --target-cycles, --target-macs"),
    ({"target_cycles": 1.5}, "--target-cycles 1.5 must be a fraction in (0, 1)"),
    ({"target_cycles": 0.2, "then": "zip"}, "unknown --then 'zip'"),
])
def test_bad_oicsr_options_fail_in_one_line(kw, msg):
    with pytest.raises(CompressError) as e:
        CompressRequest(model="resnet8", method="oicsr", **kw).check()
    assert msg in str(e.value) and "\n" not in str(e.value)


def test_pruning_options_need_oicsr():
    with pytest.raises(CompressError, match="--target-cycles applies to --method oicsr only"):
        CompressRequest(model="resnet8", method="pq", target_cycles=0.2).check()


def test_unreachable_target_fails_before_training():
    req = CompressRequest(model="resnet8", method="oicsr", target_cycles=0.95, progress=False)
    with pytest.raises(CompressError, match="cannot be met: pruning every block to one inner"):
        run_compress(req)


def test_pq_block_that_breaks_the_pruned_layout_names_the_layer(tmp_path):
    p = narrow(build_model("resnet8", seed=0, **ARGS), [list(range(11)), list(range(32)),
                                                          list(range(64))])
    with pytest.raises(CompressError, match="d=18 does not divide layer layer1.0.conv2's "
                                            "reduction length 99"):
        check_options(p, "pq", CompressOptions(d=18))
    save_checkpoint(tmp_path / "f.pt", p, name="resnet8",
                    model_args={**ARGS, "inner_widths": inner_widths(p)})
    with pytest.raises(CompressError, match="layer1.0.conv2's reduction length 99"):
        run_compress(CompressRequest(model=str(tmp_path / "f.pt"), method="pq", d=18,
                                     progress=False))


# ---------------------------------------------------------------- prune loop and RTL
def _pruned(name: str, method: str = "oicsr") -> tuple[nn.Module, list[int]]:
    """A few steps of the prune / fine-tune loop on seeded random data (quality irrelevant)."""
    m = _randomise_bn(build_model(name, seed=0, **ARGS)).train()
    dl = _random_loader()
    opts = PruneOptions(target=0.3, epochs=1, iters=2, final_epochs=1, progress=False)
    res = prune_model(m, dl, dl, load_config("small"), opts, method=method)
    assert res.report["cost_after"] <= res.report["target_cost"]
    assert res.widths == inner_widths(res.model) and res.widths != inner_widths(m)
    return res.model, res.widths


@pytest.mark.parametrize("method", ["oicsr", "l1"])
def test_prune_loop_meets_the_cycle_target(method):
    _pruned("resnet8", method)


@pytest.fixture(scope="module")
def small_rtl() -> None:
    from shiftbook.config import PRESETS
    from shiftbook.sim.rtl import runner
    from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

    try:
        setup_verilator_env()
        from shiftbook.hw.verilog import generate_verilog  # noqa: F401
    except (ToolchainError, ImportError) as e:
        pytest.skip(str(e))
    runner.build(PRESETS["small"])


@pytest.mark.rtl
@pytest.mark.parametrize("name, n_layers", [("resnet8", 11), ("resnet20", 23)])
def test_pruned_resnet_bit_exact_in_rtl(tmp_path: Path, small_rtl, name, n_layers):
    from shiftbook.cli import main
    from shiftbook.sim.network import simulate_bundle
    from shiftbook.sw.bundle import load_bundle
    from shiftbook.timing import estimate

    p, widths = _pruned(name)
    dl = _random_loader()
    cm = compress(p.eval(), "deepshift-q", dl, dl,
                  CompressOptions(epochs=0, progress=False, bn_batches=1),
                  model_name=name, model_args={**ARGS, "inner_widths": widths})
    save_compressed(tmp_path / "c.pt", cm)
    b = tmp_path / "b"
    assert main(["compile", str(tmp_path / "c.pt"), "--config", "small", "--calib", "4",
                 "-o", str(b)]) == 0
    rec = simulate_bundle(b, "rtl").record
    bad = [(lay["name"], lay["mismatches"]) for lay in rec["layers"] if not lay["bit_exact"]]
    assert rec["bit_exact"] and not bad, bad
    assert len(rec["layers"]) == n_layers
    est = estimate(load_bundle(b))
    assert [e.cycles for e in est.layers] == [lay["cycles"] for lay in rec["layers"]]
