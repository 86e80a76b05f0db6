"""BN folding before compression (every code kept by the frontend) and PQ's size target."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from shiftbook.cli import main
from shiftbook.sw.compress import (
    CodebookFormat,
    CompressError,
    CompressOptions,
    compress,
    fit_ratio,
    load_compressed,
    model_size,
    pq_plan,
    save_compressed,
)
from shiftbook.sw.compress.int_check import int_accuracy, kept_codes, lower_compressed
from shiftbook.sw.compress.pq import _paper_plans
from shiftbook.sw.compress.size import size_report

PRESET = {"layer1.0.conv1": (32, 9), "layer1.0.conv2": (32, 9), "layer2.0.conv1": (64, 9),
          "layer2.0.conv2": (128, 9), "layer2.0.downsample.0": (16, 4),
          "layer3.0.conv1": (256, 9), "layer3.0.conv2": (256, 9),
          "layer3.0.downsample.0": (64, 4), "fc": (32, 4)}
TINY_PQ = dict(em_iters=2, layer_ft_iters=1, global_ft_epochs=0, shift_ft_epochs=0,
               n_activations=16, n_rows=128, k=8, fc_k=8, bn_batches=1)


def _paper(model, plan, fp32=None):
    return size_report(model, _paper_plans(model, plan), fp32_bytes=fp32)


def test_ratio_plan_resnet8(resnet8):
    assert pq_plan(resnet8, CompressOptions()) == PRESET
    base = _paper(resnet8, PRESET)
    assert round(base.ratio, 2) == 11.82                   # the small preset (k=256)
    # hand check of the first step: halving layer3.0.conv2 (4096 sub-vectors of d=9, k=256)
    # saves 1 index bit per sub-vector (512 B) + half its fp16 codebook (128*9*2 = 2304 B);
    # layer3.0.conv1 would save 256 + 2304, layer2.0.conv2 128 + 1152
    step1 = dict(PRESET, **{"layer3.0.conv2": (128, 9)})
    assert base.paper_bytes - _paper(resnet8, step1).paper_bytes == 512 + 2304
    plan = pq_plan(resnet8, CompressOptions(target_ratio=15))
    assert plan == dict(PRESET, **{"layer3.0.conv1": (128, 9), "layer3.0.conv2": (64, 9)})
    assert _paper(resnet8, plan).ratio >= 15
    step2 = dict(PRESET, **{"layer3.0.conv1": (128, 9), "layer3.0.conv2": (128, 9)})
    assert _paper(resnet8, step2).ratio < 15               # one step fewer misses it
    # an already met target changes nothing; d is never changed
    assert pq_plan(resnet8, CompressOptions(target_ratio=11)) == PRESET
    tight = pq_plan(resnet8, CompressOptions(target_ratio=40))
    assert {n: d for n, (_, d) in tight.items()} == {n: d for n, (_, d) in PRESET.items()}
    assert _paper(resnet8, tight).ratio >= 40 and min(k for k, _ in tight.values()) >= 2


def test_ratio_plan_folded_baseline(resnet8):
    """BN folded: a conv bias (1 value per channel) instead of BN affine (2), so the same
    target needs one step fewer against the unfolded model's fp32 bytes."""
    from shiftbook.sw.compress import fold_bn

    folded, rec = fold_bn(resnet8, (1, 32, 32))
    fp32 = 4.0 * sum(p.numel() for p in resnet8.parameters())
    assert len(rec["bn"]) == 9 and "conv1" in rec["bias"] and "fc" not in rec["bias"]
    plan = pq_plan(folded, CompressOptions(target_ratio=15), fp32_bytes=fp32)
    assert plan == dict(PRESET, **{"layer3.0.conv1": (128, 9), "layer3.0.conv2": (128, 9)})
    assert _paper(folded, plan, fp32).ratio >= 15


def test_impossible_ratio_one_line(resnet8, tmp_path, capsys):
    with pytest.raises(CompressError, match=r"target ratio 100x cannot be met: with k=2"):
        pq_plan(resnet8, CompressOptions(target_ratio=100))
    with pytest.raises(CompressError, match="positive"):
        fit_ratio(resnet8, PRESET, 0.0)
    for argv, msg in ((["--method", "pq", "--ratio", "100"], "cannot be met"),
                      (["--method", "inq", "--ratio", "15"], "applies to pq only")):
        rc = main(["compress", "resnet8", "-o", str(tmp_path / "o.pt"), "--quiet"] + argv)
        err = capsys.readouterr().err.strip()
        assert rc == 2 and len(err.splitlines()) == 1 and msg in err, err
    assert not (tmp_path / "o.pt").exists()


def _trained_bn(model: nn.Module) -> nn.Module:
    """Give every BN non-trivial statistics and affine parameters (an untrained model's BN
    scale is 1/sqrt(1 + eps): folding it would change nothing)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                c = m.num_features
                m.running_var.copy_(torch.rand(c, generator=g) * 2 + 0.3)
                m.running_mean.copy_(torch.randn(c, generator=g) * 0.2)
                m.weight.copy_(torch.rand(c, generator=g) + 0.5)
                m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return model.eval()


@pytest.mark.parametrize("method,kw", [("deepshift-q", dict(epochs=0)), ("pq", TINY_PQ)])
def test_fold_bn_keeps_every_code(tiny_loaders, resnet8, digits, method, kw):
    tr, te = tiny_loaders
    model = _trained_bn(resnet8)
    calib = digits.x_train[:8]
    cm = compress(model, method, tr, te, CompressOptions(progress=False, **kw))
    assert not any(isinstance(m, nn.BatchNorm2d) for m in cm.modules())
    assert cm.model.conv1.bias is not None
    assert [r["step"] for r in cm.meta["steps"]][:2] == ["float", "bn folded"]
    steps = [r["step"] for r in cm.meta["steps"]]
    assert "bias recalibrated" in steps and "bn recalibrated" not in steps
    low = lower_compressed(cm, calib)
    kept = kept_codes(cm, low)
    assert kept.lost == [] and kept.kept == kept.layers == 10, kept.lost
    assert kept.codebooks == kept.codebooks_kept == (9 if method == "pq" else 0)
    assert kept.all_kept
    # the integer network really is that model: its logits follow the float model's
    x, y = digits.x_test[:32], digits.y_test[:32]
    with torch.no_grad():
        ref = cm(x).numpy()
    got = low.logits(x)
    rel = float(((got - ref) ** 2).sum() / ((ref - ref.mean()) ** 2).sum())
    assert rel < 0.01
    assert 0.0 <= int_accuracy(low, x, y) <= 100.0
    # BN float: the compiler cannot keep the codes of the layers it folds BN into
    cm2 = compress(model, method, tr, te, CompressOptions(progress=False, fold_bn=False, **kw))
    assert any(isinstance(m, nn.BatchNorm2d) for m in cm2.modules())
    kept2 = kept_codes(cm2, lower_compressed(cm2, calib))
    assert kept2.kept < kept2.layers and not kept2.all_kept


def test_folded_save_load_export(tmp_path, tiny_loaders, resnet8):
    tr, te = tiny_loaders
    model = _trained_bn(resnet8)
    cm = compress(model, "pq", tr, te, CompressOptions(progress=False, target_ratio=12,
                                                       **TINY_PQ),
                  model_name="resnet8", model_args={"num_classes": 10, "in_channels": 1})
    assert cm.meta["bn_folded"]["bn"][0] == "bn1"
    assert cm.meta["fp32_bytes"] == 4.0 * sum(p.numel() for p in model.parameters())
    save_compressed(tmp_path / "c.pt", cm)
    back = load_compressed(tmp_path / "c.pt")
    x = te.dataset.tensors[0][:4]
    ref = cm.eval()(x)
    assert torch.equal(back(x), ref)
    assert isinstance(back.model.bn1, nn.Identity)
    assert torch.equal(back.model.layer3[0].conv2.bias, cm.model.layer3[0].conv2.bias)
    assert isinstance(back.formats["fc"], CodebookFormat)
    assert model_size(back).ratio == model_size(cm).ratio >= 12
    ep = torch.export.export(back, (x,))
    assert torch.equal(ep.module()(x), ref)
    from shiftbook.sw.compress.pipeline import format_summary, summary_dict

    text = format_summary(summary_dict(back, model_size(back)))
    assert "batch norm: 9 folded into the convs" in text
    assert "pq k chosen per layer for a 12x target: layer1.0.conv1 k=8" in text


def test_recalibrate_bias_matches_channel_means():
    from torch.utils.data import DataLoader, TensorDataset

    from shiftbook.sw.compress.common import recalibrate_bias

    g = torch.Generator().manual_seed(0)
    teacher = nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Conv2d(4, 3, 1), nn.Flatten(),
                            nn.Linear(3 * 6 * 6, 5)).eval()
    student = copy.deepcopy(teacher)
    with torch.no_grad():                                  # "rounding" errors
        student[0].weight.mul_(0.7)
        student[2].weight.add_(0.05)
    x = torch.randn(40, 2, 8, 8, generator=g)
    dl = DataLoader(TensorDataset(x, torch.zeros(40)), batch_size=20)
    assert recalibrate_bias(student, teacher, dl, max_batches=2)
    with torch.no_grad():
        for i, dims in ((0, (0, 2, 3)), (2, (0, 2, 3)), (4, (0,))):
            t = teacher[:i + 1](x).mean(dims)
            s = student[:i + 1](x).mean(dims)
            torch.testing.assert_close(s, t, rtol=0, atol=1e-5)
        assert not torch.allclose(student[0].bias, teacher[0].bias)
    assert not recalibrate_bias(nn.Sequential(nn.Conv2d(2, 2, 1, bias=False)),
                                nn.Sequential(nn.Conv2d(2, 2, 1, bias=False)), dl)
