"""Out-In-Channel Sparsity Regularization (OICSR, Li et al., CVPR 2019) for basic-block
ResNets, pruned iteratively to a hardware target (docs/compression.md, "Structured pruning").

* **Regulariser** (:func:`oicsr_penalty`): ``lambda * sum_groups ||g||_2`` where the group of
  block-inner channel ``i`` is ``[W1f[i, ...], beta1[i], W2f[:, i, ...]]``: ``conv1``'s filter
  ``i`` and ``conv2``'s input slice ``i``, both **BN-folded** (each conv's weight times its BN's
  ``gamma / sqrt(running_var + eps)`` per output channel, the statistics detached), plus
  ``bn1``'s shift. Folding puts the BN scale into the group, so shrinking a conv weight that
  BN renormalises is not free, and the shift goes with it (a pruned channel then outputs 0).
* **Selection** (:func:`select_channels`): out-in energy ``||W1f[i]||^2 + beta1[i]^2 +
  ||W2f[:, i]||^2``, divided by the mean energy of its block; all channels of the network in
  one ranking, the weakest removed first until the cost (cycles, MACs or weight bytes of
  :class:`~.prune.CostModel`) is at most the target: one global ratio, each block's falls out.
* **Iterative prune / fine-tune** (:func:`prune_model`): ``iters`` rounds of regularised,
  distilled training (KL to the float teacher + cross-entropy) and a pruning step to an
  intermediate target, then a distilled fine-tune at the final widths.

``method="l1"`` runs the L1 filter baseline (:func:`.prune.l1_filter_keep`, uniform per-layer
ratio) with the same distilled fine-tuning, the peer the bench compares against.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from shiftbook.config import CoreConfig
from shiftbook.sw.models.compressed import CompressError
from shiftbook.sw.train import TrainConfig, evaluate, train

from .common import Steps, frozen_copy, kd_loss
from .prune import CostModel, PruneGroup, inner_widths, l1_filter_keep, narrow, prune_groups

__all__ = ["PruneOptions", "PruneResult", "PRUNE_METHODS", "oicsr_penalty", "group_vectors",
           "channel_energy", "select_channels", "prune_model"]

PRUNE_METHODS = ("oicsr", "l1")


@dataclass
class PruneOptions:
    """Knobs of :func:`prune_model` (epochs are passes over the training loader)."""

    target: float = 0.25           # fraction of the objective to remove (0.25: 25% fewer)
    objective: str = "cycles"      # cycles | macs | bytes (CostModel)
    lam: float = 1e-3              # OICSR group-lasso weight (lambda)
    iters: int = 3                 # prune / fine-tune rounds
    epochs: int = 2                # regularised distilled training per round
    final_epochs: int = 3          # distilled fine-tune at the final widths
    lr: float = 0.01
    kd_alpha: float = 0.7          # loss = alpha * KD + (1 - alpha) * CE
    temperature: float = 2.0
    min_width: int = 1
    progress: bool = True

    def check(self) -> None:
        """One-line CompressError for a bad option."""
        if not (self.lam >= 0.0 and self.lam < float("inf")):
            raise CompressError(f"--lambda {self.lam:g} must be a finite number >= 0")
        if not 0.0 < self.target < 1.0:
            raise CompressError(f"pruning target {self.target:g} must be a fraction in (0, 1) "
                                f"(0.25: 25% fewer {self.objective})")
        for name in ("iters", "min_width"):
            if getattr(self, name) < 1:
                raise CompressError(f"pruning {name} must be >= 1, not {getattr(self, name)}")
        for name in ("epochs", "final_epochs"):
            if getattr(self, name) < 0:
                raise CompressError(f"pruning {name} must be >= 0, not {getattr(self, name)}")


@dataclass
class PruneResult:
    """The pruned float model (BN kept), its widths and the report the CLI prints."""

    model: nn.Module
    widths: list[int]
    report: dict[str, Any] = field(default_factory=dict)


def _folded(model: nn.Module, conv: str, bn: str) -> torch.Tensor:
    """``conv``'s weight times its BN's ``gamma / sqrt(running_var + eps)`` (stats detached)."""
    c = model.get_submodule(conv)
    b = model.get_submodule(bn)
    scale = b.weight / torch.sqrt(b.running_var.detach() + b.eps)
    return c.weight * scale.reshape(-1, 1, 1, 1)


def group_vectors(model: nn.Module, g: PruneGroup) -> torch.Tensor:
    """The block's out-in groups, one row per inner channel: ``[W1f[i], beta1[i], W2f[:, i]]``."""
    w1 = _folded(model, g.conv1, g.bn1).flatten(1)
    w2 = _folded(model, g.conv2, g.bn2).transpose(0, 1).flatten(1)
    beta = model.get_submodule(g.bn1).bias.reshape(-1, 1)
    return torch.cat([w1, beta, w2], dim=1)


def oicsr_penalty(model: nn.Module, groups: list[PruneGroup] | None = None) -> torch.Tensor:
    """The OICSR group lasso: the sum over out-in groups of their L2 norms (not yet * lambda)."""
    groups = groups or prune_groups(model)
    return sum((group_vectors(model, g).norm(dim=1).sum() for g in groups),
               torch.zeros(()))


@torch.no_grad()
def channel_energy(model: nn.Module, groups: list[PruneGroup] | None = None
                   ) -> list[torch.Tensor]:
    """Per block: each inner channel's out-in energy divided by the block's mean energy."""
    out = []
    for g in groups or prune_groups(model):
        e = group_vectors(model, g).pow(2).sum(dim=1)
        out.append(e / e.mean().clamp_min(1e-30))
    return out


def select_channels(energy: list[torch.Tensor], cost: CostModel, target: int, *,
                    min_width: int = 1) -> list[list[int]]:
    """Global greedy selection: remove channels weakest-first across all blocks until
    ``cost.cost(widths) <= target`` (blocks stop at ``min_width``). Kept channels per block."""
    widths = [len(e) for e in energy]
    removed: list[set[int]] = [set() for _ in energy]
    order = sorted((float(v), b, i) for b, e in enumerate(energy) for i, v in enumerate(e))
    current = cost.cost(widths)
    for _, b, i in order:
        if current <= target:
            break
        if widths[b] <= min_width:
            continue
        widths[b] -= 1
        removed[b].add(i)
        current = cost.cost(widths)
    if current > target:
        raise CompressError(f"pruning cannot reach {target} {cost.objective} "
                            f"(at least {current} with every block at {min_width} channels)")
    return [[i for i in range(len(e)) if i not in removed[b]] for b, e in enumerate(energy)]


def _loss(teacher: nn.Module, opts: PruneOptions, groups: list[PruneGroup] | None,
          model_ref: list[nn.Module]) -> Callable[..., torch.Tensor]:
    """Distillation + CE (+ lambda * OICSR penalty of the current model when ``groups``)."""
    kd = kd_loss(teacher, opts.temperature)

    def loss(out: torch.Tensor, y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        v = opts.kd_alpha * kd(out, y, x) + (1.0 - opts.kd_alpha) * F.cross_entropy(out, y)
        if groups is not None and opts.lam > 0:
            v = v + opts.lam * oicsr_penalty(model_ref[0], groups)
        return v

    return loss


def _fit(model: nn.Module, teacher: nn.Module, loader: DataLoader, opts: PruneOptions,
         epochs: int, regularise: bool, desc: str) -> None:
    groups = prune_groups(model) if regularise else None
    train(model, loader, TrainConfig(epochs=epochs, lr=opts.lr, progress=opts.progress,
                                     desc=desc, weight_decay=5e-4),
          loss_fn=_loss(teacher, opts, groups, [model]))


def prune_model(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
                cfg: CoreConfig, opts: PruneOptions, *, method: str = "oicsr",
                input_shape: tuple[int, int, int] | None = None,
                steps: Steps | None = None) -> PruneResult:
    """Prune a trained float basic-block ResNet (BN not folded) to ``opts.target`` fewer
    ``opts.objective``; the teacher is a frozen copy of ``model``."""
    if method not in PRUNE_METHODS:
        raise CompressError(f"unknown pruning method {method!r} ({', '.join(PRUNE_METHODS)})")
    opts.check()
    shape = input_shape or tuple(next(iter(test_loader))[0].shape[1:])
    cost = CostModel(model, cfg, shape, opts.objective)
    target = cost.target_cost(opts.target)
    steps = steps or Steps()
    teacher = frozen_copy(model)
    float_acc = evaluate(model, test_loader)
    base = cost.cost(cost.base_widths)
    steps.add("float", float_acc, cost=base)
    student = frozen_copy(model).train()
    for p in student.parameters():
        p.requires_grad_(True)
    if method == "l1":
        student = narrow(student, l1_filter_keep(student, cost, target))
        steps.add("l1 pruned", evaluate(student, test_loader), cost=cost.cost(
            inner_widths(student)))
        _fit(student, teacher, train_loader, opts, opts.iters * opts.epochs + opts.final_epochs,
             False, "l1 fine-tune")
    else:
        for k in range(1, opts.iters + 1):
            _fit(student, teacher, train_loader, opts, opts.epochs, True,
                 f"oicsr {k}/{opts.iters}")
            step_target = max(target, int(base - (base - target) * k / opts.iters))
            keep = select_channels(channel_energy(student), cost, step_target,
                                   min_width=opts.min_width)
            student = narrow(student, keep)
            steps.add(f"oicsr pruned {k}/{opts.iters}", evaluate(student, test_loader),
                      cost=cost.cost(inner_widths(student)))
        _fit(student, teacher, train_loader, opts, opts.final_epochs, False, "oicsr fine-tune")
    student.eval()
    widths = inner_widths(student)
    acc = evaluate(student, test_loader)
    steps.add(f"{method} fine-tuned", acc, cost=cost.cost(widths))
    report = {"method": method, "objective": opts.objective, "target": opts.target,
              "lambda": opts.lam, "config": cfg.name, "widths_before": cost.base_widths,
              "widths_after": widths, "cost_before": base, "cost_after": cost.cost(widths),
              "target_cost": target, "float_acc": float_acc, "pruned_acc": acc,
              "layers": cost.table(widths),
              "totals": {k: [sum(r[k] for r in cost.table(cost.base_widths)),
                             sum(r[k] for r in cost.table(widths))]
                         for k in ("macs", "cycles", "weight_bytes")}}
    return PruneResult(student, widths, report)


def check_prune_request(method: str, targets: dict[str, float | None], lam: float | None,
                        then: str | None, error: type[ValueError] = CompressError) -> None:
    """The CLI's pruning options (``targets``: flag -> value of ``--target-cycles/-macs/
    -bytes``): given only with ``--method oicsr``, which needs exactly one target in (0, 1),
    lambda >= 0 and a weight format to follow (``--then``)."""
    from . import METHODS

    given = {f: v for f, v in targets.items() if v is not None}
    if method != "oicsr":
        extra = list(given) + [f for f, v in (("--lambda", lam), ("--then", then))
                               if v is not None]
        if extra:
            raise error(f"{extra[0]} applies to --method oicsr only, not {method}")
        return
    if len(given) != 1:
        raise error("--method oicsr needs exactly one of " + ", ".join(targets)
                    + (f" (got {', '.join(given)})" if given else ""))
    (flag, value), = given.items()
    if not (0.0 < value < 1.0):
        raise error(f"{flag} {value:g} must be a fraction in (0, 1) (0.25: 25% fewer)")
    if lam is not None and not (0.0 <= lam < float("inf")):
        raise error(f"--lambda {lam:g} must be a finite number >= 0")
    if then is not None and then not in METHODS:
        raise error(f"unknown --then {then!r} ({', '.join(METHODS)})")


def format_pruning(p: dict[str, Any]) -> str:
    """The per-layer pruning table `shiftbook compress --method oicsr` prints."""
    lines = [f"pruning ({p['method']}, {100 * p['target']:g}% fewer {p['objective']} on "
             f"{p['config']}): inner widths {p['widths_before']} -> {p['widths_after']}",
             f"{'layer':<24} {'C_in':>9} {'C_out':>9} {'MACs':>9} {'est. cycles':>11} "
             f"{'bytes':>7}"]
    for r in p["layers"]:
        cin, cout = "{}->{}".format(*r["cin"]), "{}->{}".format(*r["cout"])
        lines.append(f"{r['layer']:<24} {cin:>9} {cout:>9} {r['macs']:>9} {r['cycles']:>11} "
                     f"{r['weight_bytes']:>7}")
    t = p["totals"]
    lines.append("total: " + ", ".join(
        f"{k.replace('_', ' ')} {a} -> {b} ({100 * (1 - b / max(1, a)):.1f}% fewer)"
        for k, (a, b) in t.items()))
    lines.append(f"pruned float accuracy: {p['float_acc']:.2f}% -> {p['pruned_acc']:.2f}%")
    return "\n".join(lines)


def _request_target(req: Any) -> tuple[str, float]:
    targets = (("cycles", req.target_cycles), ("macs", req.target_macs),
               ("bytes", req.target_bytes))
    return next((o, v) for o, v in targets if v is not None)


def check_prune_target(req: Any, model: nn.Module, cfg: CoreConfig,
                       input_shape: tuple[int, int, int]) -> None:
    """Before any training: the model can be pruned and its target can be met."""
    objective, target = _request_target(req)
    CostModel(model, cfg, input_shape, objective).target_cost(target)


def prune_for_request(req: Any, model: nn.Module, cfg: CoreConfig, train_loader: DataLoader,
                      test_loader: DataLoader) -> tuple[PruneResult, Steps]:
    """The pruning step of `shiftbook compress --method oicsr` (``req``: its
    ``CompressRequest``): the pruned float model and the steps' accuracies."""
    objective, target = _request_target(req)
    opts = PruneOptions(target=target, objective=objective,
                        lam=req.lam if req.lam is not None else PruneOptions.lam,
                        progress=req.progress)
    if req.prune_epochs is not None:
        opts.epochs = opts.final_epochs = req.prune_epochs
    steps = Steps()
    res = prune_model(model, train_loader, test_loader, cfg, opts, steps=steps)
    return res, steps


def attach_pruning(cm: Any, res: PruneResult, steps: Steps, fp32_bytes: float) -> None:
    """Record the pruning in a compressed model's meta: ``pruning`` (the report), the method
    ``oicsr+<then>``, the unpruned float accuracy and size as the baselines, and the pruning
    steps before the weight format's."""
    cm.meta["pruning"] = res.report
    cm.meta["method"] = f"oicsr+{cm.meta.get('method')}"
    cm.meta["float_acc"] = res.report["float_acc"]
    cm.meta["fp32_bytes"] = fp32_bytes
    cm.meta["steps"] = steps.records + [s for s in cm.meta.get("steps", [])
                                        if s["step"] != "float"]
