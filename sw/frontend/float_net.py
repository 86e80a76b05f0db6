"""The float network the tracer builds (:class:`FloatNet`): layers in execution order with batch
norm folded, still in float64, and the weights whose shift codes must be kept
(:class:`FixedWeights`, :func:`detect_shift`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shiftbook import numerics as nx

from .errors import FrontendError

__all__ = ["FixedWeights", "FLayer", "FloatNet", "detect_shift", "WEIGHTED"]

#: Layer kinds that are convolutions (weight, bias, residual, ReLU).
WEIGHTED = ("conv", "linear", "identity")


@dataclass
class FixedWeights:
    """A layer whose shift codes are given (a ``shiftbook compress`` format, or weights that
    are already exact powers of two) and must be kept.

    Members
    -------
    codes: int64 ``(O, I, KH, KW)`` shift codes with ``exp_bits``.
    w_frac: int64 ``(O,)`` the format's scale (real weight = value * 2**-w_frac).
    factor: float64 ``(O,)`` per-output-channel factors folded in since (batch-norm scale,
        average-pool ``1/(H*W)``): the layer's float weight is ``real(codes) * factor``.
    fmt: the compressed format record (``None`` for detected power-of-two weights).
    """

    codes: np.ndarray
    exp_bits: int
    w_frac: np.ndarray
    factor: np.ndarray
    fmt: Any = None

    def real(self) -> np.ndarray:
        v = np.asarray(nx.decode_shift(self.codes, self.exp_bits), dtype=np.float64)
        return v * np.exp2(-self.w_frac.astype(np.float64)).reshape(-1, 1, 1, 1) \
            * self.factor.reshape(-1, 1, 1, 1)


@dataclass
class FLayer:
    """One layer of a :class:`FloatNet`.

    ``kind``: ``conv`` (also a linear layer on a flattened ``(C, H, W)`` input), ``linear``
    (input ``(C, 1, 1)``), ``identity`` (a 1x1 identity convolution: a standalone ReLU or
    residual add), ``maxpool``, ``sumpool``. ``weight`` is float64 ``(O, I, KH, KW)`` with
    everything folded in; ``bias`` ``(O,)``. ``where`` names the node and module (errors).
    """

    kind: str
    name: str
    input: str
    output: str
    out_shape: tuple[int, int, int]
    where: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    kernel: tuple[int, int] = (1, 1)
    relu: bool = False
    residual: str | None = None
    fixed: FixedWeights | None = None
    bn: str | None = None
    module: str = ""


@dataclass
class FloatNet:
    """The lowered network in float64: input tensor, layers in execution order, outputs."""

    input: str
    input_shape: tuple[int, int, int]
    layers: list[FLayer] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def layer(self, name: str) -> FLayer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor (float64, ``(N, C, H, W)``) for a float batch ``x``."""
        env = {self.input: torch.as_tensor(x).to(torch.float64)}
        for lay in self.layers:
            a = env[lay.input]
            t, left, b, r = lay.padding
            if lay.kind in WEIGHTED:
                w = torch.from_numpy(lay.weight)
                y = F.conv2d(F.pad(a, (left, r, t, b)), w, torch.from_numpy(lay.bias),
                             stride=lay.stride)
                if lay.residual is not None:
                    y = y + env[lay.residual]
                if lay.relu:
                    y = torch.relu(y)
            elif lay.kind == "maxpool":
                y = F.max_pool2d(F.pad(a, (left, r, t, b), value=-float("inf")), lay.kernel,
                                 lay.stride)
            elif lay.kind == "sumpool":
                kh, kw = lay.kernel
                y = F.avg_pool2d(F.pad(a, (left, r, t, b)), lay.kernel, lay.stride) * (kh * kw)
            else:  # pragma: no cover - trace only makes the kinds above
                raise FrontendError(f"unknown layer kind {lay.kind!r}")
            env[lay.output] = y
        return env

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.outputs[0]].flatten(1)


def detect_shift(w: np.ndarray, exp_bits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes and per-output-channel ``w_frac`` if every weight is 0 or ``±2**k`` and each
    channel's exponents span at most ``2**exp_bits - 1``; else ``None``."""
    emax = (1 << exp_bits) - 1
    a = np.asarray(w, dtype=np.float64)
    flat = a.reshape(a.shape[0], -1)
    wf = np.zeros(a.shape[0], np.int64)
    for c in range(flat.shape[0]):
        nz = flat[c][flat[c] != 0]
        if nz.size == 0:
            continue
        mant, ex = np.frexp(np.abs(nz))
        if not np.all(mant == 0.5) or not np.all(np.isfinite(nz)):
            return None
        ex = ex - 1
        if int(ex.max() - ex.min()) > emax:
            return None
        wf[c] = emax - int(ex.max())
    codes, _ = nx.float_to_shift(a, exp_bits, w_frac=wf.reshape((-1,) + (1,) * (a.ndim - 1)))
    back = nx.decode_shift(codes, exp_bits) * np.exp2(-wf.astype(np.float64)).reshape(
        (-1,) + (1,) * (a.ndim - 1))
    if not np.array_equal(back, a):
        return None
    return np.asarray(codes, dtype=np.int64), wf
