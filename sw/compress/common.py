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
           "recalibrate_bn"]


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
    bn_recalibrate: bool = True      # re-estimate BN statistics after each rounding step
    bn_batches: int | None = 8       # training batches used for that (None: all)
    # INQ
    inq_steps: tuple[float, ...] = (0.5, 0.75, 0.875, 1.0)
    # k-means (SLQ/MLQ)
    k: int | None = None             # codebook size (kmeans: default 16; pq: per preset)
    slq_steps: tuple[float, ...] = (0.5, 0.75, 1.0)
    mlq_group: int = 3               # layers quantized together (depth-level increments)
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
    shift_ft_epochs: int = 6         # after codewords become shift codes (STE)
    train_bn: bool = True            # PQ global fine-tunings also train BN affine (float)
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


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader: DataLoader,
                   max_batches: int | None = None) -> None:
    """Re-estimate every BatchNorm's running mean/var on training data (exact average over
    the batches; weights untouched). Rounding weights shifts the activation statistics, most
    for a one-channel first conv; this is a cheap repair before (or instead of) fine-tuning."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns:
        return
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
