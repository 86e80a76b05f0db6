"""A compressed model and its checkpoint format (``shiftbook compress`` output).

:class:`CompressedModel` wraps a float architecture whose every compressible layer's weight is
the decoded hardware weight of its format record (``formats[name]``, also
``module.shiftbook_format``; ``sw/models/formats.py``). :func:`save_compressed` writes it as a
plain torch dict, :func:`load_compressed` rebuilds it. Compression (``sw/compress``) writes these
and the frontend (``sw/frontend``) reads them, so they live here, below both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from shiftbook.sw.models.formats import CodebookFormat, Format, FormatError, format_from_dict

__all__ = ["CompressError", "CompressedModel", "compressible_layers", "get_module",
           "apply_bn_folding", "save_compressed", "load_compressed", "FORMAT_VERSION",
           "READABLE_VERSIONS"]

FORMAT_VERSION = 3          # 2: meta["bn_folded"] (BN folded into the convs before compression)
#                             3: model_args may hold "inner_widths" (a pruned ResNet, OICSR)
READABLE_VERSIONS = (1, 2, 3)


class CompressError(ValueError):
    """A compression option or input that cannot work (the message says which)."""


def compressible_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Conv2d and Linear layers in definition order (= forward order for the built-in models)."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d | nn.Linear)]


def get_module(model: nn.Module, name: str) -> nn.Module:
    return model.get_submodule(name)


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


