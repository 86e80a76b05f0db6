"""Hardware weight formats of a compressed layer, and the compressed model the compiler reads.

Every compressible layer (``nn.Conv2d`` / ``nn.Linear``) of a compressed model carries one
format record; the layer's float ``weight`` is exactly the format's :meth:`decode` (so the
model's forward computes with the hardware weights). See docs/compression.md.

Weight layout shared by both formats: a layer's weight ``W`` (``(C_out, C_in, KH, KW)`` or
``(C_out, C_in)``) is viewed as ``(C_out, R)`` with the reduction index ``r = (c*KH + ky)*KW +
kx`` (the ISA's reduction order, docs/isa.md). The real weight is
``decode_shift(code) * 2**-w_frac[c_out]`` (``shiftbook/numerics.py``).

One codebook type: the kernel's ``shiftbook.weights.CodebookWeights`` (numpy) is the codebook
format the compiler, the simulators and the IR use. :class:`CodebookFormat` is the compressed
model's torch view of the same record (same ``shape, k, d, exp_bits, codebook, indices``, plus
the layer's scale ``w_frac``); :attr:`CodebookFormat.weights` is the kernel record itself. The
view exists because compression accepts block sizes the decoder cannot read (``d`` dividing
the reduction length, e.g. ``d = 4`` on a 3x3 kernel): such a layer is still a valid
compressed layer, and the frontend compiles it as shift codes (``weights`` says why).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from shiftbook import numerics as nx
from shiftbook.weights import CodebookWeights, from_blocks, index_bits

__all__ = ["FormatError", "ShiftFormat", "CodebookFormat", "LAYOUT", "format_from_dict",
           "Format"]

LAYOUT = "cout_r"   # rows = output channels, columns = reduction index (c, ky, kx), kx fastest


class FormatError(ValueError):
    """An inconsistent format record."""


def _as_i64(t: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(t), dtype=torch.int64).clone()


@dataclass
class ShiftFormat:
    """One shift code per weight.

    Members
    -------
    exp_bits: exponent field width (CoreConfig.exp_bits); codes are ``exp_bits + 2`` bits.
    w_frac: int64 ``(C_out,)``: real weight = value * 2**-w_frac[c_out].
    codes: int64, the weight's shape: shift codes (sw/numerics layout).
    """

    exp_bits: int
    w_frac: torch.Tensor
    codes: torch.Tensor
    kind: str = "shift"

    def __post_init__(self) -> None:
        self.w_frac = _as_i64(self.w_frac).reshape(-1)
        self.codes = _as_i64(self.codes)
        if self.codes.ndim < 2 or self.w_frac.numel() != self.codes.shape[0]:
            raise FormatError("ShiftFormat: w_frac needs one entry per output channel")
        top = (1 << (self.exp_bits + 2)) - 1
        if int(self.codes.min()) < 0 or int(self.codes.max()) > top:
            raise FormatError(f"ShiftFormat: codes outside [0, {top}]")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    def int_weight(self) -> np.ndarray:
        """Integer weight values (0 or ±2**e), the weight's shape."""
        return np.asarray(nx.decode_shift(self.codes.numpy(), self.exp_bits), dtype=np.int64)

    def decode(self) -> torch.Tensor:
        """Real weight (float32, exact: powers of two)."""
        w = torch.from_numpy(self.int_weight()).to(torch.float64)
        frac = self.w_frac.reshape((-1,) + (1,) * (w.ndim - 1)).to(torch.float64)
        return (w * torch.exp2(-frac)).to(torch.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "shift", "exp_bits": self.exp_bits, "w_frac": self.w_frac,
                "codes": self.codes.to(torch.uint8)}


@dataclass
class CodebookFormat:
    """A codebook of ``k`` codewords, each ``d`` shift codes; one index per sub-vector.

    Members
    -------
    k, d: codebook size and block size (d = 1: scalar weight sharing).
    exp_bits: exponent field width of the codeword codes.
    codebook: int64 ``(k, d)``: shift codes of each codeword.
    indices: int64 ``(C_out, R // d)``: sub-vector ``j`` of output channel ``o`` covers
        reduction indices ``[j*d, (j+1)*d)`` (layout ``"cout_r"``).
    w_frac: int64 ``(C_out,)``: the scale; all equal (one codebook per layer, per-layer scale).
    shape: the layer weight's shape.
    layout: ``"cout_r"``.
    """

    k: int
    d: int
    exp_bits: int
    codebook: torch.Tensor
    indices: torch.Tensor
    w_frac: torch.Tensor
    shape: tuple[int, ...]
    layout: str = LAYOUT
    kind: str = "codebook"

    def __post_init__(self) -> None:
        self.codebook = _as_i64(self.codebook)
        self.indices = _as_i64(self.indices)
        self.w_frac = _as_i64(self.w_frac).reshape(-1)
        self.shape = tuple(int(s) for s in self.shape)
        cout = self.shape[0]
        r = math.prod(self.shape[1:])
        if self.layout != LAYOUT:
            raise FormatError(f"CodebookFormat: unknown layout {self.layout!r}")
        if r % self.d:
            raise FormatError(f"CodebookFormat: d={self.d} does not divide the reduction "
                              f"length {r}")
        if tuple(self.codebook.shape) != (self.k, self.d):
            raise FormatError(f"CodebookFormat: codebook shape {tuple(self.codebook.shape)} "
                              f"!= (k={self.k}, d={self.d})")
        if tuple(self.indices.shape) != (cout, r // self.d):
            raise FormatError("CodebookFormat: indices must be (C_out, R // d)")
        if self.indices.numel() and (int(self.indices.min()) < 0
                                     or int(self.indices.max()) >= self.k):
            raise FormatError("CodebookFormat: index outside [0, k)")
        if self.w_frac.numel() != cout:
            raise FormatError("CodebookFormat: w_frac needs one entry per output channel")

    @property
    def index_bits(self) -> int:
        """Bits the hardware stores per index: ceil(log2 k) (at least 1)."""
        return index_bits(self.k)

    @property
    def weights(self) -> CodebookWeights:
        """The kernel's codebook record of this layer (numpy), the format the compiler
        stores; a ``WeightFormatError`` naming the problem if the decoder cannot read its
        block layout."""
        return CodebookWeights.from_record(self)

    def codes(self) -> torch.Tensor:
        """The per-weight shift codes, the weight's shape (the kernel's block layout)."""
        blocks = self.codebook.numpy()[self.indices.numpy()]
        return torch.from_numpy(from_blocks(blocks, self.shape))

    def int_weight(self) -> np.ndarray:
        return np.asarray(nx.decode_shift(self.codes().numpy(), self.exp_bits), dtype=np.int64)

    def decode(self) -> torch.Tensor:
        w = torch.from_numpy(self.int_weight()).to(torch.float64)
        frac = self.w_frac.reshape((-1,) + (1,) * (w.ndim - 1)).to(torch.float64)
        return (w * torch.exp2(-frac)).to(torch.float32)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "codebook", "k": self.k, "d": self.d, "exp_bits": self.exp_bits,
                "codebook": self.codebook.to(torch.uint8), "indices": self.indices.to(
                    torch.int32), "w_frac": self.w_frac, "shape": list(self.shape),
                "layout": self.layout}


Format = ShiftFormat | CodebookFormat


def format_from_dict(d: dict[str, Any]) -> Format:
    kind = d.get("kind")
    if kind == "shift":
        return ShiftFormat(int(d["exp_bits"]), d["w_frac"], d["codes"])
    if kind == "codebook":
        return CodebookFormat(int(d["k"]), int(d["d"]), int(d["exp_bits"]), d["codebook"],
                              d["indices"], d["w_frac"], tuple(d["shape"]),
                              layout=str(d.get("layout", LAYOUT)))
    raise FormatError(f"unknown weight format kind {kind!r}")
