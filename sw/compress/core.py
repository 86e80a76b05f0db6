"""Shared machinery of the compression methods: shift rounding and its straight-through hook,
BN folding before compression. The compressed model and its file format live in
``sw/models/compressed.py`` (re-exported here), below both this package and the frontend, which
reads them.

A :class:`CompressedModel` wraps the float architecture whose every compressible layer's weight
has been replaced by the decoded hardware weight of its format record (``formats[name]``, also
``module.shiftbook_format``). By default BN was folded into the convs before compression (they
have float biases, BN is ``nn.Identity``); otherwise BN layers stay float. The compiler folds
biases (and any BN) into its int32 BIAS entries.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from shiftbook import numerics as nx
from shiftbook.sw.models.compressed import (
    FORMAT_VERSION,
    CompressedModel,
    CompressError,
    apply_bn_folding,
    compressible_layers,
    get_module,
    load_compressed,
    save_compressed,
)
from shiftbook.sw.models.formats import ShiftFormat

__all__ = ["CompressError", "compressible_layers", "weight_rows", "shift_codes",
           "shift_decode", "ShiftSTE", "CompressedModel", "save_compressed", "load_compressed",
           "FORMAT_VERSION", "get_module", "has_bn", "fold_bn", "apply_bn_folding"]

def weight_rows(w: torch.Tensor) -> torch.Tensor:
    """The weight as ``(C_out, R)``, reduction index ``(c*KH + ky)*KW + kx``."""
    return w.reshape(w.shape[0], -1)


def shift_codes(w: torch.Tensor, exp_bits: int, *, rounding: str = "log",
                per_channel: bool = True,
                w_frac: np.ndarray | int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Round a weight tensor to shift codes with ``sw/numerics.float_to_shift``.

    Returns ``(codes, w_frac)`` with ``w_frac`` an int64 array of one entry per output channel
    (per-layer scales are repeated). A given ``w_frac`` (scalar or per channel) is kept.
    """
    a = w.detach().to(torch.float64).cpu().numpy()
    cout = a.shape[0]
    if w_frac is not None:
        wf = np.broadcast_to(np.asarray(w_frac, dtype=np.int64), (cout,)).copy()
        codes, _ = nx.float_to_shift(a, exp_bits, rounding=rounding,
                                     w_frac=wf.reshape((-1,) + (1,) * (a.ndim - 1)))
        return np.asarray(codes, dtype=np.int64), wf
    if per_channel:
        codes, wf = nx.float_to_shift(a, exp_bits, rounding=rounding, axis=0)
        return np.asarray(codes, dtype=np.int64), np.asarray(wf, dtype=np.int64).reshape(-1)
    codes, wf = nx.float_to_shift(a, exp_bits, rounding=rounding)
    return np.asarray(codes, dtype=np.int64), np.full(cout, int(wf), dtype=np.int64)


def shift_decode(codes: np.ndarray, w_frac: np.ndarray, exp_bits: int, *,
                 like: torch.Tensor | None = None) -> torch.Tensor:
    """Real weights of shift codes with per-output-channel scales (float32)."""
    v = np.asarray(nx.decode_shift(codes, exp_bits), dtype=np.float64)
    frac = np.asarray(w_frac, dtype=np.float64).reshape((-1,) + (1,) * (v.ndim - 1))
    t = torch.from_numpy(v * np.exp2(-frac)).to(torch.float32)
    return t if like is None else t.to(like.device)


class ShiftSTE(nn.Module):
    """Parametrization: forward the shift-rounded weight, backward straight through (DeepShift-Q).

    The rounding is ``sw/numerics.float_to_shift`` itself (so training sees exactly the
    weights the hardware gets), with a per-output-channel scale recomputed each forward.
    """

    def __init__(self, exp_bits: int, rounding: str = "log", per_channel: bool = True) -> None:
        super().__init__()
        self.exp_bits, self.rounding, self.per_channel = exp_bits, rounding, per_channel

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            codes, wf = shift_codes(w, self.exp_bits, rounding=self.rounding,
                                    per_channel=self.per_channel)
            q = shift_decode(codes, wf, self.exp_bits, like=w)
        return w + (q - w).detach()


def has_bn(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fold_bn(model: nn.Module, input_shape: tuple[int, ...]
            ) -> tuple[nn.Module, dict[str, list[str]]]:
    """``sw.frontend.fold_batchnorm``: a copy of ``model`` with every conv/linear -> BN pair
    folded (the BN becomes ``nn.Identity``, the layer gains a bias). Returns the copy and the
    record :func:`apply_bn_folding` needs to rebuild its architecture: ``{"bn": [BN module
    names replaced], "bias": [layer names that gained a bias]}``."""
    from shiftbook.sw.frontend import FrontendError, fold_batchnorm

    try:
        folded = fold_batchnorm(model, tuple(int(s) for s in input_shape))
    except FrontendError as e:
        raise CompressError(f"cannot fold batch norm (use --no-fold-bn): {e}") from None
    before = dict(model.named_modules())
    after = dict(folded.named_modules())
    bns = [n for n, mod in before.items() if isinstance(mod, nn.modules.batchnorm._BatchNorm)
           and isinstance(after.get(n), nn.Identity)]
    bias = [n for n, mod in before.items() if isinstance(mod, nn.Conv2d | nn.Linear)
            and mod.bias is None and getattr(after.get(n), "bias", None) is not None]
    return folded, {"bn": bns, "bias": bias}


def bits_for(k: int) -> int:
    return max(1, math.ceil(math.log2(k)))


def shift_format_of(w: torch.Tensor, exp_bits: int, *, rounding: str = "log",
                    per_channel: bool = True) -> ShiftFormat:
    codes, wf = shift_codes(w, exp_bits, rounding=rounding, per_channel=per_channel)
    return ShiftFormat(exp_bits, wf, codes)
