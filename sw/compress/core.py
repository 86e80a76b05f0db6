"""Shared machinery: compressible layers, shift rounding hooks, the compressed model, save/load.

A :class:`CompressedModel` wraps the float architecture whose every compressible layer's weight
has been replaced by the decoded hardware weight of its format record (``formats[name]``, also
``module.shiftbook_format``). By default BN was folded into the convs before compression (they
have float biases, BN is ``nn.Identity``); otherwise BN layers stay float. The compiler folds
biases (and any BN) into its int32 BIAS entries.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from shiftbook import numerics as nx

from .formats import CodebookFormat, Format, FormatError, ShiftFormat, format_from_dict

__all__ = ["CompressError", "compressible_layers", "weight_rows", "shift_codes",
           "shift_decode", "ShiftSTE", "CompressedModel", "save_compressed", "load_compressed",
           "FORMAT_VERSION", "get_module", "has_bn", "fold_bn", "apply_bn_folding"]

FORMAT_VERSION = 2          # 2: meta["bn_folded"] (BN folded into the convs before compression)
READABLE_VERSIONS = (1, 2)


class CompressError(ValueError):
    """A compression option or input that cannot work (the message says which)."""


def compressible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d and Linear layers in definition order (= forward order for the built-in models)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


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


class CompressedModel(nn.Module):
    """A model whose compressible layers hold decoded hardware weights.

    Members
    -------
    model: the architecture (BN float, weights = ``formats[name].decode()``).
    formats: layer name -> ShiftFormat | CodebookFormat.
    meta: model name, model_args, method, exp_bits, ``bn_folded`` (None, or the BN modules
        folded into their convs before compression, see :func:`fold_bn`), ``fp32_bytes`` (the
        unfolded float model's parameters at 4 bytes: the ratios' baseline), ``paper_fp32``
        (layers the paper's size accounting counts as fp32, e.g. PQ's first conv), ``steps``
        (accuracy after each compression step), anything else JSON-like.
    """

    def __init__(self, model: nn.Module, formats: dict[str, Format] | None = None,
                 meta: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.model = model
        self.formats: dict[str, Format] = {}
        self.meta: dict[str, Any] = dict(meta or {})
        for name, fmt in (formats or {}).items():
            self.attach(name, fmt)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def attach(self, name: str, fmt: Format) -> None:
        """Give layer ``name`` its format and set its weight to the decoded hardware weight."""
        mod = get_module(self.model, name)
        if not isinstance(mod, nn.Conv2d | nn.Linear):
            raise FormatError(f"{name} is not a Conv2d/Linear layer")
        shape = fmt.shape if isinstance(fmt, CodebookFormat) else tuple(fmt.codes.shape)
        if tuple(mod.weight.shape) != tuple(shape):
            raise FormatError(f"{name}: format shape {tuple(shape)} != weight "
                              f"{tuple(mod.weight.shape)}")
        with torch.no_grad():
            mod.weight.copy_(fmt.decode())
        mod.shiftbook_format = fmt
        self.formats[name] = fmt

    def check(self) -> None:
        """Every compressible layer has a format and its weight equals the decoded format."""
        for name, mod in compressible_layers(self.model):
            fmt = self.formats.get(name)
            if fmt is None:
                raise FormatError(f"layer {name} has no hardware format")
            if not torch.equal(mod.weight.detach(), fmt.decode()):
                raise FormatError(f"layer {name}: weight differs from its decoded format")


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


def apply_bn_folding(model: nn.Module, record: dict[str, list[str]]) -> nn.Module:
    """Give a freshly built architecture the shape of a BN-folded one (in place): the listed BN
    modules become ``nn.Identity``, the listed layers get a (zero) bias; load the folded state
    dict afterwards."""
    for name in record.get("bias", []):
        mod = get_module(model, name)
        mod.bias = nn.Parameter(torch.zeros(mod.weight.shape[0], dtype=mod.weight.dtype))
    for name in record.get("bn", []):
        model.set_submodule(name, nn.Identity())
    return model


def save_compressed(path: str | Path, cm: CompressedModel) -> None:
    """``torch.save`` of a plain dict: state_dict + formats + model name/args + meta."""
    cm.check()
    torch.save({"kind": "compressed", "format_version": FORMAT_VERSION,
                "model": cm.meta.get("model"), "model_args": cm.meta.get("model_args", {}),
                "state_dict": cm.model.state_dict(),
                "formats": {n: f.to_dict() for n, f in cm.formats.items()},
                "meta": cm.meta}, str(path))


def load_compressed(path: str | Path) -> CompressedModel:
    """Rebuild a compressed model saved by :func:`save_compressed` (built-in models only)."""
    from shiftbook.sw.models import build_model

    p = Path(path)
    if not p.is_file():
        raise CompressError(f"compressed model {path} does not exist")
    obj = torch.load(str(p), map_location="cpu", weights_only=True)
    if not isinstance(obj, dict) or obj.get("kind") != "compressed":
        raise CompressError(f"{path} is not a shiftbook compressed model")
    if obj.get("format_version") not in READABLE_VERSIONS:
        raise CompressError(f"{path}: format version {obj.get('format_version')} "
                            f"(this shiftbook reads {', '.join(map(str, READABLE_VERSIONS))})")
    model = build_model(obj["model"], seed=None, **obj["model_args"])
    folded = obj["meta"].get("bn_folded")
    if folded:
        apply_bn_folding(model, folded)
    model.load_state_dict(obj["state_dict"])
    model.eval()
    cm = CompressedModel(model, meta=obj["meta"])
    for name, fd in obj["formats"].items():
        cm.attach(name, format_from_dict(fd))
    cm.check()
    return cm


def bits_for(k: int) -> int:
    return max(1, math.ceil(math.log2(k)))


def shift_format_of(w: torch.Tensor, exp_bits: int, *, rounding: str = "log",
                    per_channel: bool = True) -> ShiftFormat:
    codes, wf = shift_codes(w, exp_bits, rounding=rounding, per_channel=per_channel)
    return ShiftFormat(exp_bits, wf, codes)
