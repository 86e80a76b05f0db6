"""Built-in models and their registry.

``build_model(name, num_classes=..., in_channels=..., weights=CKPT|None, seed=...)`` builds one
of :data:`MODELS`. ``weights`` is a checkpoint path (a plain ``state_dict``, or a dict with a
``"state_dict"`` key as written by :func:`save_checkpoint`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .resnet import BasicBlock, Bottleneck, ResNet, cifar_resnet, imagenet_resnet

__all__ = ["MODELS", "ModelError", "ModelSpec", "build_model", "save_checkpoint",
           "load_checkpoint", "BasicBlock", "Bottleneck", "ResNet"]


class ModelError(ValueError):
    """Unknown model name or unusable checkpoint."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    factory: Callable[..., nn.Module]
    input_size: int        # square input side the model is built for
    default_classes: int


MODELS: dict[str, ModelSpec] = {
    "resnet8": ModelSpec("resnet8", lambda **kw: cifar_resnet(8, **kw), 32, 10),
    "resnet20": ModelSpec("resnet20", lambda **kw: cifar_resnet(20, **kw), 32, 10),
    "resnet56": ModelSpec("resnet56", lambda **kw: cifar_resnet(56, **kw), 32, 10),
    "resnet18": ModelSpec("resnet18", lambda **kw: imagenet_resnet(18, **kw), 224, 1000),
    "resnet34": ModelSpec("resnet34", lambda **kw: imagenet_resnet(34, **kw), 224, 1000),
    "resnet50": ModelSpec("resnet50", lambda **kw: imagenet_resnet(50, **kw), 224, 1000),
}


def build_model(name: str, *, num_classes: int | None = None, in_channels: int = 3,
                weights: str | Path | None = None, seed: int | None = 0,
                inner_widths: list[int] | None = None) -> nn.Module:
    """Build a built-in model; ``seed`` fixes the random initialisation (None: do not seed);
    ``inner_widths``: a pruned ResNet's per-block inner widths (``sw/models/resnet.py``)."""
    if name not in MODELS:
        raise ModelError(f"unknown model {name!r} (built-in: {', '.join(MODELS)})")
    spec = MODELS[name]
    if seed is not None:
        torch.manual_seed(seed)
    if inner_widths is None:
        model = spec.factory(num_classes=num_classes or spec.default_classes,
                             in_channels=in_channels)
    else:
        try:
            model = spec.factory(num_classes=num_classes or spec.default_classes,
                                 in_channels=in_channels, inner_widths=inner_widths)
        except ValueError as e:
            raise ModelError(f"{name}: {e}") from None
    if weights is not None:
        state = load_checkpoint(weights)["state_dict"]
        try:
            model.load_state_dict(state)
        except RuntimeError as e:
            first = str(e).strip().splitlines()
            raise ModelError(f"checkpoint {weights} does not fit {name}: "
                             f"{first[1].strip() if len(first) > 1 else first[0]}") from None
    return model


def save_checkpoint(path: str | Path, model: nn.Module, *, name: str,
                    model_args: dict[str, Any] | None = None, **extra: Any) -> None:
    """Save a float model: ``{"kind": "float", "model", "model_args", "state_dict", ...}``."""
    torch.save({"kind": "float", "model": name, "model_args": dict(model_args or {}),
                "state_dict": model.state_dict(), **extra}, str(path))


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (or a bare state_dict)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(str(p), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file
        why = ("the file is empty" if p.stat().st_size == 0 else
               f"not a torch checkpoint ({type(e).__name__}: "
               f"{(str(e).strip().splitlines() or ['no message'])[0][:120]})")
        raise ModelError(f"cannot read checkpoint {path}: {why}") from None
    if isinstance(obj, dict) and "state_dict" in obj:
        return obj
    if isinstance(obj, dict) and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return {"kind": "float", "state_dict": obj}
    raise ModelError(f"checkpoint {path} holds no state_dict")
