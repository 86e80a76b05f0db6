"""Options, step records and helpers shared by the compression methods."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shiftbook.sw.train import evaluate

__all__ = ["CompressOptions", "Steps", "kd_loss", "infinite_batches", "frozen_copy",
           "recalibrate_bn", "recalibrate_bias", "recalibrate", "affine_params"]


@dataclass
class CompressOptions:
    """Every knob of every method (each method reads the ones it needs).

    Epoch counts are full passes over the training loader; ``*_iters`` are batches.
    """

    exp_bits: int = 4
    rounding: str = "log"            # shift rounding: log (DeepShift) | linear (INQ/ShiftCNN)
    per_channel: bool = True         # shift methods: per-output-channel power-of-two scale
    epochs: int = 3                  # fine-tuning epochs (per INQ/SLQ stage for those methods)
    lr: float | None = None          # None: the method's default
    seed: int = 0
    progress: bool = True
    bn_recalibrate: bool = True      # re-estimate BN statistics (BN folded: the biases, to
    #                                  match the float model's channel means) after rounding
    bn_batches: int | None = 8       # training batches used for that (None: all)
    fold_bn: bool = True             # fold BN into the convs first (every code kept exactly)
    bias_batches: int | None = 4     # BN folded: training batches for bias recalibration
    # INQ
    inq_steps: tuple[float, ...] = (0.5, 0.75, 0.875, 1.0)
    # k-means (SLQ/MLQ)
    k: int | None = None             # codebook size (kmeans: default 16; pq: per preset)
    slq_steps: tuple[float, ...] = (0.5, 0.75, 1.0)
    mlq_group: int = 1               # mlq: layers quantized together (depth-level increments;
    #                                  1 = layer by layer)
    # PQ
    d: int | None = None             # block size for every PQ layer (None: preset)
    preset: str = "small"
    clamp: bool = True               # clamp k below (number of sub-vectors) / 4
    fc_k: int | None = None          # classifier k (None: preset)
    n_activations: int = 256         # images whose layer inputs are sampled
    n_rows: int = 4096               # im2col rows per EM iteration
    em_iters: int = 50
    eps: float = 1e-8                # empty-cluster split noise
    layer_ft_iters: int = 40         # per-layer centroid fine-tuning (batches)
    global_ft_epochs: int = 4        # all centroids together
    shift_ft_epochs: int = 6         # after codewords become shift codes (STE); BN folded:
    #                                  one STE fine-tune of global_ft + 2 * shift_ft epochs
    train_bn: bool = True            # PQ global fine-tunings also train BN affine (float),
    #                                  or the conv/linear biases of a BN-folded model
    target_ratio: float | None = None  # PQ: halve k until the paper-accounted ratio >= this
    batch_size: int = 128
    max_k: int = 65536               # CoreConfig.max_k
    max_d: int = 64                  # CoreConfig.max_d


@dataclass
class Steps:
    """Accuracy after each compression step (the CLI and the bench print them)."""

    records: list[dict[str, Any]] = field(default_factory=list)

    def add(self, step: str, acc: float, **extra: Any) -> None:
        self.records.append({"step": step, "acc": round(float(acc), 3), **extra})


def kd_loss(teacher: nn.Module, temperature: float = 1.0
            ) -> Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]:
    """KL(teacher || student) on softmax outputs; labels unused (distillation only)."""

    def loss(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = F.softmax(teacher(x) / temperature, dim=1)
        return F.kl_div(F.log_softmax(out / temperature, dim=1), t,
                        reduction="batchmean") * temperature ** 2

    return loss


def infinite_batches(loader: DataLoader):
    while True:
        yield from loader


def frozen_copy(model: nn.Module) -> nn.Module:
    t = copy.deepcopy(model).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    return t


def acc(model: nn.Module, loader: DataLoader) -> float:
    return evaluate(model, loader)


def affine_params(model: nn.Module) -> list[nn.Parameter]:
    """The float per-channel parameters that stay float in hardware: BN affine parameters, or,
    in a BN-folded model (no BatchNorm left), the biases of the conv/linear layers (the compiler
    folds them into its int32 BIAS entries)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if bns:
        return [p for b in bns for p in b.parameters()]
    return [m.bias for m in model.modules()
            if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None]


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: DataLoader,
                   max_batches: int | None = None) -> bool:
    """Re-estimate every BatchNorm's running mean/var on training data (exact average over
    the batches; weights untouched). Rounding weights shifts the activation statistics, most
    for a one-channel first conv; this is a cheap repair before (or instead of) fine-tuning.
    A BN-folded model has no BatchNorm left: a no-op. Returns whether there was a BN."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return False
    was = model.training
    moms = [b.momentum for b in bns]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
    model.train()
    for i, (x, _) in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        model(x)
    for b, mo in zip(bns, moms, strict=True):
        b.momentum = mo
    model.train(was)
    return True


def _channel_mean(out: torch.Tensor) -> torch.Tensor:
    return out.to(torch.float64).mean(dim=[0] + list(range(2, out.ndim)))


@torch.no_grad()
def recalibrate_bias(model: nn.Module, teacher: nn.Module, loader: DataLoader,
                     max_batches: int | None = None) -> bool:
    """The BN-folded model's counterpart of :func:`recalibrate_bn`: layer by layer in forward
    order, add to each conv/linear bias the mean (per output channel, over the training images
    and positions) of ``teacher``'s layer output minus ``model``'s, so every channel's mean
    output matches the float model's again, each layer measured with the corrections of the
    earlier layers in place. Layers without a bias are skipped. Returns whether any bias
    changed.

    ``teacher`` must have the same layer names (the float model the compressed one came from).
    The ``max_batches`` training batches run as one batch, once through ``teacher`` and once
    through ``model``, whose layer hooks correct each output in place (bias + delta) before the
    next layer sees it: exactly the layer-by-layer result for the cost of two forward passes.
    """
    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None]
    if not layers:
        return False
    x = torch.cat([x for (x, _), _ in zip(loader, range(max_batches or 1 << 30),
                                          strict=False)])
    was, twas = model.training, teacher.training
    model.eval()
    teacher.eval()
    target: dict[str, torch.Tensor] = {}

    def keep(name: str) -> Callable[..., None]:
        def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> None:
            target[name] = _channel_mean(out)
        return hook

    def fix(name: str, mod: nn.Module) -> Callable[..., torch.Tensor]:
        def hook(_m: nn.Module, _a: tuple, out: torch.Tensor) -> torch.Tensor:
            delta = (target[name] - _channel_mean(out)).to(out.dtype)
            mod.bias += delta.to(mod.bias.dtype)
            return out + delta.reshape((1, -1) + (1,) * (out.ndim - 2))
        return hook

    hs = [teacher.get_submodule(n).register_forward_hook(keep(n)) for n, _ in layers]
    try:
        t_prob = torch.softmax(teacher(x), dim=1)
    finally:
        for h in hs:
            h.remove()
    def kl() -> float:
        return float(F.kl_div(F.log_softmax(model(x), dim=1), t_prob, reduction="batchmean"))

    before = kl()
    saved = [mod.bias.detach().clone() for _, mod in layers]
    hs = [mod.register_forward_hook(fix(n, mod)) for n, mod in layers]
    try:
        model(x)
    finally:
        for h in hs:
            h.remove()
    changed = True
    if kl() > before:        # a badly broken network: matching means made it worse; undo
        for (_, mod), b in zip(layers, saved, strict=True):
            mod.bias.copy_(b)
        changed = False
    model.train(was)
    teacher.train(twas)
    return changed


def recalibrate(model: nn.Module, teacher: nn.Module, loader: DataLoader,
                opts: CompressOptions) -> str | None:
    """The repair after a rounding step (``opts.bn_recalibrate``): BN statistics
    (:func:`recalibrate_bn`) or, BN folded, the biases (:func:`recalibrate_bias`). Returns the
    step's name for :class:`Steps` (None: nothing done)."""
    if not opts.bn_recalibrate:
        return None
    if recalibrate_bn(model, loader, opts.bn_batches):
        return "bn recalibrated"
    if recalibrate_bias(model, teacher, loader, opts.bias_batches):
        return "bias recalibrated"
    return None
