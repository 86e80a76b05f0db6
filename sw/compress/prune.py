"""Structured channel pruning of basic-block ResNets: the prunable groups, the hardware cost of
a width choice, the surgery that builds the narrower network, and the L1 filter baseline.

**Groups** (:func:`prune_groups`): one per basic block, the block-inner channels (``conv1``'s
outputs, ``bn1``'s channels, ``conv2``'s inputs). Channels tied by an identity shortcut (a
stage's width: stem, ``conv2`` outputs, ``downsample`` outputs) are never pruned, so every
residual addition keeps matching shapes; pruning a block-inner channel removes one filter of
``conv1`` and one input channel of ``conv2`` together (the OICSR out-in pair).

**Cost** (:class:`CostModel`): a width choice's MACs, cycles or weight bytes. Cycles are the
exact cycle model (``shiftbook.timing``) of each conv/linear layer compiled alone for the chosen
:class:`~shiftbook.config.CoreConfig` (``sw.reference.random_layer`` of the layer's shape; the
count does not depend on the weight values), cached per shape. Pruning an output channel pays
only when ``ceil(C_out / cols)`` drops; pruning an input channel always pays.

**Surgery** (:func:`narrow`): a copy of the model with the kept channels' weights (and BN
entries); with the removed channels' weights and BN scale/shift zero, the narrower network
computes exactly what the wide one did.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from shiftbook.config import CoreConfig
from shiftbook.sw.models.compressed import CompressError

__all__ = ["PruneGroup", "LayerShape", "CostModel", "OBJECTIVES", "prune_groups",
           "inner_widths", "narrow", "layer_cost", "l1_filter_keep"]

OBJECTIVES = ("cycles", "macs", "bytes")


@dataclass(frozen=True)
class PruneGroup:
    """One block's inner channels: ``conv1`` (its outputs), ``bn1``, ``conv2`` (its inputs)."""

    block: str
    conv1: str
    bn1: str
    conv2: str
    bn2: str


@dataclass(frozen=True)
class LayerShape:
    """A conv/linear layer's geometry as the compiler sees it (``size``: input side)."""

    name: str
    op: str          # conv | linear
    cin: int
    cout: int
    kernel: int
    stride: int
    padding: int
    size: int


def prune_groups(model: nn.Module) -> list[PruneGroup]:
    """The prunable groups of a basic-block ResNet, in block order (one per block)."""
    from shiftbook.sw.models.resnet import BasicBlock

    groups = [PruneGroup(n, f"{n}.conv1", f"{n}.bn1", f"{n}.conv2", f"{n}.bn2")
              for n, m in model.named_modules() if isinstance(m, BasicBlock)]
    if not groups:
        raise CompressError("channel pruning needs a basic-block ResNet (resnet8/20/56/18/34)")
    for g in groups:
        if not isinstance(model.get_submodule(g.bn1), nn.BatchNorm2d):
            raise CompressError(f"channel pruning runs before BN folding: {g.bn1} is not a "
                                f"BatchNorm2d")
    return groups


def inner_widths(model: nn.Module) -> list[int]:
    """Every block's inner width (``conv1`` output channels), in block order."""
    return [int(model.get_submodule(g.conv1).out_channels) for g in prune_groups(model)]


def _sub_conv(conv: nn.Conv2d, out_idx: torch.Tensor | None, in_idx: torch.Tensor | None
              ) -> nn.Conv2d:
    w = conv.weight.detach()
    if out_idx is not None:
        w = w[out_idx]
    if in_idx is not None:
        w = w[:, in_idx]
    new = nn.Conv2d(w.shape[1], w.shape[0], conv.kernel_size, stride=conv.stride,
                    padding=conv.padding, bias=conv.bias is not None)
    with torch.no_grad():
        new.weight.copy_(w)
        if conv.bias is not None:
            b = conv.bias.detach()
            new.bias.copy_(b if out_idx is None else b[out_idx])
    return new


def _sub_bn(bn: nn.BatchNorm2d, idx: torch.Tensor) -> nn.BatchNorm2d:
    new = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum)
    with torch.no_grad():
        new.weight.copy_(bn.weight.detach()[idx])
        new.bias.copy_(bn.bias.detach()[idx])
        new.running_mean.copy_(bn.running_mean[idx])
        new.running_var.copy_(bn.running_var[idx])
        new.num_batches_tracked.copy_(bn.num_batches_tracked)
    return new


def narrow(model: nn.Module, keep: Sequence[Sequence[int]]) -> nn.Module:
    """A copy of ``model`` keeping, in block ``b``, the inner channels ``keep[b]`` (sorted,
    at least one). The state dict fits ``build_model(..., inner_widths=[len(k) ...])``."""
    groups = prune_groups(model)
    if len(keep) != len(groups):
        raise CompressError(f"{len(keep)} keep lists for {len(groups)} blocks")
    new = copy.deepcopy(model)
    for g, k in zip(groups, keep, strict=True):
        idx = torch.as_tensor(sorted(int(i) for i in k), dtype=torch.long)
        width = model.get_submodule(g.conv1).out_channels
        if len(idx) == 0 or int(idx.max()) >= width or len(set(idx.tolist())) != len(idx):
            raise CompressError(f"{g.block}: keep list must hold 1..{width} distinct channels")
        new.set_submodule(g.conv1, _sub_conv(model.get_submodule(g.conv1), idx, None))
        new.set_submodule(g.bn1, _sub_bn(model.get_submodule(g.bn1), idx))
        new.set_submodule(g.conv2, _sub_conv(model.get_submodule(g.conv2), None, idx))
    new.train(model.training)
    return new


def trace_shapes(model: nn.Module, input_shape: tuple[int, int, int]) -> list[LayerShape]:
    """The geometry of every conv/linear layer (one forward pass of a zero image)."""
    sizes: dict[str, int] = {}
    hooks = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d | nn.Linear):
            def hook(_m: nn.Module, a: tuple, _o: torch.Tensor, name: str = name) -> None:
                sizes[name] = int(a[0].shape[-1]) if a[0].ndim == 4 else 1
            hooks.append(mod.register_forward_hook(hook))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape))
    finally:
        for h in hooks:
            h.remove()
        model.train(was)
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, nn.Conv2d):
            out.append(LayerShape(name, "conv", mod.in_channels, mod.out_channels,
                                  mod.kernel_size[0], mod.stride[0], mod.padding[0], sizes[name]))
        elif isinstance(mod, nn.Linear):
            out.append(LayerShape(name, "linear", mod.in_features, mod.out_features, 1, 1, 0, 1))
    return out


@functools.lru_cache(maxsize=8192)
def layer_cost(cfg: CoreConfig, shape: LayerShape) -> tuple[int, int, int]:
    """(cycles, MACs, weight bytes) of one layer compiled alone for ``cfg`` (cached)."""
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer
    from shiftbook.timing import estimate_program

    lay = random_layer(shape.op, shape.cin, shape.cout, shape.kernel, shape.stride,
                       shape.padding, shape.size, seed=0, exp_bits=cfg.exp_bits,
                       acc_bits=cfg.acc_bits, max_exp=6 if cfg.pe == "mult" else None)
    prog = compile_graph(lay.graph, cfg, lay.inputs)
    meta = prog.layers[0]
    return estimate_program(cfg, prog.insns).total, int(meta.macs), int(meta.weight_bytes)


class CostModel:
    """The hardware cost of a basic-block ResNet as a function of its inner widths."""

    def __init__(self, model: nn.Module, cfg: CoreConfig, input_shape: tuple[int, int, int],
                 objective: str = "cycles") -> None:
        if objective not in OBJECTIVES:
            raise CompressError(f"unknown pruning objective {objective!r} "
                                f"({', '.join(OBJECTIVES)})")
        self.cfg = cfg
        self.objective = objective
        self.groups = prune_groups(model)
        self.shapes = trace_shapes(model, input_shape)
        self.base_widths = inner_widths(model)
        self._col = {"cycles": 0, "macs": 1, "bytes": 2}[objective]

    def layer_shapes(self, widths: Sequence[int]) -> list[LayerShape]:
        """The layer shapes with block ``b``'s inner width set to ``widths[b]``."""
        out_of = {g.conv1: w for g, w in zip(self.groups, widths, strict=True)}
        in_of = {g.conv2: w for g, w in zip(self.groups, widths, strict=True)}
        return [LayerShape(s.name, s.op, in_of.get(s.name, s.cin), out_of.get(s.name, s.cout),
                           s.kernel, s.stride, s.padding, s.size) for s in self.shapes]

    def layers(self, widths: Sequence[int]) -> list[tuple[LayerShape, tuple[int, int, int]]]:
        """Every layer's shape and (cycles, MACs, weight bytes) at ``widths``."""
        return [(s, layer_cost(self.cfg, s)) for s in self.layer_shapes(widths)]

    def cost(self, widths: Sequence[int]) -> int:
        """The objective's total at ``widths``."""
        return sum(c[self._col] for _, c in self.layers(widths))

    def table(self, widths: Sequence[int]) -> list[dict]:
        """Per layer: channels before/after, MACs, estimated cycles, weight bytes."""
        before = {s.name: s for s in self.shapes}
        rows = []
        for s, (cyc, macs, wb) in self.layers(widths):
            b = before[s.name]
            rows.append({"layer": s.name, "cin": [b.cin, s.cin], "cout": [b.cout, s.cout],
                         "macs": macs, "cycles": cyc, "weight_bytes": wb})
        return rows

    def target_cost(self, reduction: float) -> int:
        """The cost ``reduction`` (0 < r < 1) below the unpruned model's; refuses a target the
        narrowest network (every inner width 1) cannot meet."""
        if not 0.0 < reduction < 1.0:
            raise CompressError(f"pruning target {reduction:g} must be a fraction in (0, 1) "
                                f"(0.25: 25% fewer {self.objective})")
        base = self.cost(self.base_widths)
        target = int(base * (1.0 - reduction))
        floor = self.cost([1] * len(self.groups))
        if floor > target:
            raise CompressError(f"target of {100 * reduction:g}% fewer {self.objective} cannot "
                                f"be met: pruning every block to one inner channel saves "
                                f"{100 * (1 - floor / base):.1f}% at most")
        return target


def l1_filter_keep(model: nn.Module, cost: CostModel, target: int) -> list[list[int]]:
    """The L1 filter pruning baseline (Li et al. 2017): in every block the same fraction of
    ``conv1`` filters with the smallest L1 norms goes, the fraction raised until the cost is at
    most ``target``. Returns the kept channels per block."""
    norms = [model.get_submodule(g.conv1).weight.detach().abs().sum(dim=(1, 2, 3))
             for g in cost.groups]
    widths0 = [len(n) for n in norms]
    for step in range(1, 1000):
        frac = step / 1000
        widths = [max(1, round(w * (1 - frac))) for w in widths0]
        if cost.cost(widths) <= target:
            break
    return [sorted(torch.argsort(n, descending=True)[:w].tolist())
            for n, w in zip(norms, widths, strict=True)]
