"""What a compressed model becomes on the hardware: the integer network and its kept codes.

:func:`lower_compressed` lowers a :class:`CompressedModel` with the frontend
(``sw.frontend.lower``, ``weights="auto"``); :func:`kept_codes` checks, layer by layer, that the
integer op computes with exactly the format's codes (same codes, no gain error from a folded
batch norm, codebook layers still codebooks); :func:`int_accuracy` is the top-1 accuracy of the
golden integer executor. Used by bench/bench_compress.py and the fold tests.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from shiftbook.sw.models.formats import CodebookFormat

from .core import CompressedModel

__all__ = ["KeptCodes", "lower_compressed", "kept_codes", "int_accuracy"]


@dataclass
class KeptCodes:
    """Per-layer result of :func:`kept_codes`.

    Members
    -------
    layers: number of layers with a format.
    kept: layers whose integer op has exactly the format's codes and no gain error.
    codebooks / codebooks_kept: codebook layers, and those the compiler stores as codebooks.
    lost: ``layer: why`` for every layer not kept (or codebook not kept as one).
    notes: the frontend's notes.
    """

    layers: int = 0
    kept: int = 0
    codebooks: int = 0
    codebooks_kept: int = 0
    lost: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def all_kept(self) -> bool:
        return self.kept == self.layers and self.codebooks_kept == self.codebooks

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "all_kept": self.all_kept}


def lower_compressed(cm: CompressedModel, calib: torch.Tensor, *, config: Any = None,
                     weights: str = "auto") -> Any:
    """``sw.frontend.lower`` of the compressed model (its formats kept where possible) with
    ``calib`` float calibration images ``(N, C, H, W)``; returns the frontend's ``Lowered``."""
    from shiftbook.config import CoreConfig
    from shiftbook.sw.frontend import lower

    cfg = config or CoreConfig()
    return lower(cm.eval(), calib=calib, config=cfg, weights=weights,
                 input_shape=tuple(int(s) for s in calib.shape[1:]))


def kept_codes(cm: CompressedModel, lowered: Any, *, tol: float = 2.0**-10) -> KeptCodes:
    """Compare every format's codes with the integer op the frontend built for that layer.

    Kept: the op's weight codes equal the format's (weight-shaped) codes and the layer's gain
    error (the non-power-of-two part of a folded BN scale, ``layers[i]["gain"]``) is 1 within
    ``tol`` (the frontend's ``GAIN_TOLERANCE``); a codebook layer must also be compiled as a
    codebook (``wfmt``)."""
    ops = {op.name: op for op in lowered.graph.ops}
    reps = {r["name"]: r for r in lowered.layers}
    res = KeptCodes(notes=list(lowered.notes))
    for name, fmt in cm.formats.items():
        res.layers += 1
        is_cb = isinstance(fmt, CodebookFormat)
        res.codebooks += is_cb
        op, rep = ops.get(name), reps.get(name, {})
        if op is None:
            res.lost.append(f"{name}: no integer op of that name")
            continue
        codes = (fmt.codes() if is_cb else fmt.codes).numpy()
        got = np.asarray(op.weight).reshape(codes.shape) if op.weight.size == codes.size \
            else None
        gain = rep.get("gain", [1.0, 1.0])
        if got is None or not np.array_equal(got, codes):
            res.lost.append(f"{name}: codes changed (weights: {rep.get('weights')})")
        elif max(abs(gain[0] - 1.0), abs(gain[1] - 1.0)) > tol:
            res.lost.append(f"{name}: codes kept with a gain error {gain[0]}..{gain[1]}")
        else:
            res.kept += 1
            if is_cb and str(rep.get("wfmt", "")).startswith("codebook"):
                res.codebooks_kept += 1
            elif is_cb:
                res.lost.append(f"{name}: codes kept, compiled as shift codes, not a codebook")
    return res


def int_accuracy(lowered: Any, x: torch.Tensor, y: torch.Tensor | np.ndarray,
                 batch: int = 128) -> float:
    """Top-1 accuracy (%) of the integer network (golden executor) on images ``x``."""
    y = np.asarray(y)
    pred = np.concatenate([lowered.logits(x[i:i + batch]).argmax(1)
                           for i in range(0, len(x), batch)])
    return 100.0 * float(np.mean(pred == y))
