"""A small trainer: SGD or Adam, cosine or step learning-rate schedule, tqdm progress."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

__all__ = ["TrainConfig", "train", "evaluate", "make_optimizer", "make_scheduler", "TrainError"]


class TrainError(ValueError):
    """Bad trainer option."""


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 0.05
    optimizer: str = "sgd"          # sgd | adam | radam
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "cosine"        # cosine | step | none
    step_size: int = 5              # step schedule: epochs per decay
    gamma: float = 0.1
    progress: bool = True
    desc: str = "train"
    history: list[dict] = field(default_factory=list)


def make_optimizer(params: Iterable, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "radam":
        return torch.optim.RAdam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise TrainError(f"unknown optimizer {cfg.optimizer!r} (sgd, adam, radam)")


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-iteration scheduler (None for a constant rate)."""
    total = max(1, cfg.epochs * steps_per_epoch)
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)
    if cfg.schedule == "step":
        return torch.optim.lr_scheduler.StepLR(opt, step_size=cfg.step_size * steps_per_epoch,
                                               gamma=cfg.gamma)
    if cfg.schedule == "none":
        return None
    raise TrainError(f"unknown schedule {cfg.schedule!r} (cosine, step, none)")


@torch.no_grad()
def evaluate(model: nn.Module, loader: DataLoader) -> float:
    """Top-1 accuracy in percent (model put in eval mode, restored afterwards)."""
    was = model.training
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += int(y.numel())
    model.train(was)
    return 100.0 * correct / max(1, total)


def train(model: nn.Module, loader: DataLoader, cfg: TrainConfig | None = None, *,
          params: Iterable | None = None, optimizer: torch.optim.Optimizer | None = None,
          loss_fn: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
          | None = None,
          after_step: Callable[[], None] | None = None,
          test_loader: DataLoader | None = None) -> list[dict]:
    """Train ``model`` for ``cfg.epochs`` epochs; returns per-epoch records (loss, test acc).

    ``loss_fn(logits, y, x)`` replaces cross-entropy (e.g. distillation); ``after_step`` runs
    after every optimizer step (e.g. to re-impose frozen weights).
    """
    cfg = cfg or TrainConfig()
    if cfg.epochs < 0:
        raise TrainError(f"epochs must be >= 0, not {cfg.epochs}")
    opt = optimizer or make_optimizer(params if params is not None else model.parameters(), cfg)
    sched = make_scheduler(opt, cfg, len(loader))
    hist = []
    for ep in range(cfg.epochs):
        model.train()
        tot = n = 0.0
        it = tqdm(loader, desc=f"{cfg.desc} {ep + 1}/{cfg.epochs}", leave=False,
                  disable=not cfg.progress)
        for x, y in it:
            opt.zero_grad(set_to_none=True)
            out = model(x)
            loss = loss_fn(out, y, x) if loss_fn else F.cross_entropy(out, y)
            loss.backward()
            opt.step()
            if after_step is not None:
                after_step()
            if sched is not None:
                sched.step()
            tot += float(loss.detach()) * len(y)
            n += len(y)
        rec = {"epoch": ep + 1, "loss": tot / max(1, n)}
        if test_loader is not None:
            rec["test_acc"] = evaluate(model, test_loader)
        hist.append(rec)
        cfg.history.append(rec)
    return hist
