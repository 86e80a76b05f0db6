"""Batch-norm folding on an ``nn.Module`` (for training shift weights after the fold).

Hardware weights that must be kept exactly (``shiftbook compress`` formats) cannot absorb a
later batch norm's non-power-of-two scale. :func:`fold_batchnorm` returns a copy of a model
whose every batch norm that the frontend would fold (directly after a convolution or linear
layer) is folded into that layer's weight and bias and replaced by ``nn.Identity``; compress
*that* model and the frontend keeps its codes with no gain error.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from .errors import FrontendError
from .source import export_module
from .trace import trace_program

__all__ = ["fold_batchnorm"]


@torch.no_grad()
def fold_batchnorm(module: nn.Module, input_shape: tuple[int, int, int] | None = None
                   ) -> nn.Module:
    """A copy of ``module`` (eval mode) with conv/linear -> batch norm pairs folded."""
    m = copy.deepcopy(module).eval()
    net = trace_program(export_module(m, input_shape), detect=False)
    for lay in net.layers:
        if lay.bn is None:
            continue
        try:
            conv = m.get_submodule(lay.name)
            bn = m.get_submodule(lay.bn)
        except AttributeError:
            raise FrontendError(f"cannot fold {lay.bn} into {lay.name}: not a submodule "
                                f"path") from None
        if not isinstance(conv, nn.Conv2d | nn.Linear) or not isinstance(bn, nn.BatchNorm2d
                                                                         | nn.BatchNorm1d):
            raise FrontendError(f"cannot fold {lay.bn} into {lay.name}: unexpected module "
                                f"types {type(conv).__name__}, {type(bn).__name__}")
        w = conv.weight.detach().to(torch.float64)
        s = (bn.weight.detach().to(torch.float64) if bn.weight is not None
             else torch.ones_like(bn.running_var, dtype=torch.float64)) / torch.sqrt(
            bn.running_var.to(torch.float64) + bn.eps)
        b = (conv.bias.detach().to(torch.float64) if conv.bias is not None
             else torch.zeros_like(s))
        beta = (bn.bias.detach().to(torch.float64) if bn.bias is not None
                else torch.zeros_like(s))
        nb = (b - bn.running_mean.to(torch.float64)) * s + beta
        conv.weight.copy_((w * s.reshape((-1,) + (1,) * (w.ndim - 1))).to(conv.weight.dtype))
        conv.bias = nn.Parameter(nb.to(conv.weight.dtype))
        m.set_submodule(lay.bn, nn.Identity())
    return m
