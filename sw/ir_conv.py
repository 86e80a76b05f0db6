"""IR MAC ops: :class:`Conv2d` (shift-code weights, bias, requantization shift, ReLU, residual,
optional codebook weight format) and :class:`Linear` (a 1x1 convolution on a ``(I, 1, 1)`` input).

``shiftbook.sw.ir`` re-exports both.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from shiftbook import numerics as nx
from shiftbook.weights import CodebookWeights, WeightFormatError

from .ir_base import IRError, Op, TensorSpec, register_op

__all__ = ["Conv2d", "Linear"]


def _per_channel(v: Any, n: int, what: str, name: str) -> np.ndarray:
    a = np.asarray(v, dtype=np.int64)
    if a.ndim == 0:
        a = np.full(n, int(a), dtype=np.int64)
    if a.shape != (n,):
        raise IRError(f"op {name!r}: {what} must have shape ({n},), not {a.shape}")
    return a


@register_op
@dataclass
class Conv2d(Op):
    """2-D convolution with shift-code weights, bias, shift requantization, optional ReLU and
    an optional residual operand added before the shift.

    Members
    -------
    weight: int64 ``(O, I, KH, KW)`` shift codes (sw/numerics layout, ``exp_bits``).
    bias: int64 ``(O,)`` at accumulator scale ``2**-(in.frac + w_frac[o])``.
    shift: int64 ``(O,)`` requantization right shift (``out = acc >> shift``, round-half-up).
    w_frac: int64 ``(O,)`` weight scale exponents (real weight = value * 2**-w_frac); kept
        for float comparisons, the integer result does not depend on it.
    stride: ``(sy, sx)``; padding: ``(top, left, bottom, right)``.
    residual: name of an int8 tensor shaped like the output, added as
        ``align_residual(r, res_shift[o])`` before the shift; ``res_shift`` int64 ``(O,)``.
    weight_format: the optional codebook weight format, the kernel's
        ``shiftbook.weights.CodebookWeights`` (``k`` codewords of ``d`` shift codes and one
        index per block of ``d`` weights). ``weight`` is then the decoded codes (the
        hardware-visible weights; checked equal); the compiler stores indices + codebook
        (``WFMT = 1``). Build with :meth:`with_codebook`. Saved as ``cb_k``, ``cb_d`` (JSON)
        and ``cb_codebook``, ``cb_indices`` (npz arrays).
    weight2: the optional second term of two-term weights, int64 shift codes shaped like
        ``weight`` (zero codes where a weight has one term): the weight value is
        ``decode_shift(weight) + decode_shift(weight2)`` (:meth:`values`). Not combined with
        a codebook format. Saved as the npz array ``weight2`` (absent for one-term layers).
    """

    kind: ClassVar[str] = "conv2d"
    ARRAYS: ClassVar[tuple[str, ...]] = ("weight", "bias", "shift", "w_frac", "res_shift")
    SCALARS: ClassVar[tuple[str, ...]] = ("exp_bits", "relu", "stride", "padding", "residual")
    #: Serialised keys of a codebook weight format: JSON scalars ``k``, ``d``; npz arrays.
    _CB_KEYS: ClassVar[tuple[str, ...]] = ("cb_k", "cb_d", "cb_codebook", "cb_indices")

    weight: np.ndarray = field(default_factory=lambda: np.zeros((1, 1, 1, 1), np.int64))
    exp_bits: int = 4
    bias: np.ndarray | None = None
    shift: np.ndarray | None = None
    w_frac: np.ndarray | None = None
    relu: bool = False
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    residual: str | None = None
    res_shift: np.ndarray | None = None
    weight_format: CodebookWeights | None = None
    weight2: np.ndarray | None = None

    def __post_init__(self) -> None:
        w = np.asarray(self.weight, dtype=np.int64)
        if w.ndim != 4:
            raise IRError(f"op {self.name!r}: weight must be (O, I, KH, KW), not {w.shape}")
        self.weight = w
        o = w.shape[0]
        self.exp_bits = int(self.exp_bits)
        if np.any((w < 0) | (w >= 1 << (self.exp_bits + 2))):
            raise IRError(f"op {self.name!r}: weight codes outside [0, 2**{self.exp_bits + 2})")
        self.bias = _per_channel(0 if self.bias is None else self.bias, o, "bias", self.name)
        self.shift = _per_channel(0 if self.shift is None else self.shift, o, "shift", self.name)
        self.w_frac = _per_channel(0 if self.w_frac is None else self.w_frac, o, "w_frac",
                                   self.name)
        self.res_shift = _per_channel(0 if self.res_shift is None else self.res_shift, o,
                                      "res_shift", self.name)
        self.relu = bool(self.relu)
        self.stride = tuple(int(s) for s in self.stride)  # type: ignore[assignment]
        self.padding = tuple(int(p) for p in self.padding)  # type: ignore[assignment]
        if len(self.stride) != 2 or min(self.stride) < 1:
            raise IRError(f"op {self.name!r}: stride {self.stride} must be two ints >= 1")
        if len(self.padding) != 4 or min(self.padding) < 0:
            raise IRError(f"op {self.name!r}: padding {self.padding} must be four ints >= 0 "
                          f"(top, left, bottom, right)")
        self._check_codebook()
        self._check_terms()

    # ---- two-term weights ----
    def _check_terms(self) -> None:
        if self.weight2 is None:
            return
        w2 = np.asarray(self.weight2, dtype=np.int64)
        if w2.ndim == 2:
            w2 = w2[:, :, None, None]
        if w2.shape != self.weight.shape:
            raise IRError(f"op {self.name!r}: weight2 has shape {w2.shape}, the weight "
                          f"{self.weight.shape}")
        if np.any((w2 < 0) | (w2 >= 1 << (self.exp_bits + 2))):
            raise IRError(f"op {self.name!r}: weight2 codes outside "
                          f"[0, 2**{self.exp_bits + 2})")
        if self.weight_format is not None:
            raise IRError(f"op {self.name!r}: two-term weights cannot use a codebook format")
        self.weight2 = w2

    @property
    def terms(self) -> int:
        """Shift terms per weight: 1, or 2 with ``weight2``."""
        return 1 if self.weight2 is None else 2

    def values(self) -> np.ndarray:
        """The integer weight values, int64 ``(O, I, KH, KW)``."""
        return np.asarray(nx.decode_terms(self.weight, self.weight2, self.exp_bits), np.int64)

    # ---- codebook weight format ----
    def _check_codebook(self) -> None:
        """``weight_format`` as a CodebookWeights of this op's weight shape and ``exp_bits``,
        whose decoded codes are ``weight``."""
        fmt = self.weight_format
        if fmt is None:
            return
        if not isinstance(fmt, CodebookWeights):
            raise IRError(f"op {self.name!r}: weight_format must be a "
                          f"shiftbook.weights.CodebookWeights, not {type(fmt).__name__}")
        shape = tuple(self.weight.shape)
        if (tuple(fmt.shape), fmt.exp_bits) != (shape, self.exp_bits):
            try:
                fmt = CodebookWeights(shape, fmt.k, fmt.d, self.exp_bits, fmt.codebook,
                                      fmt.indices)
            except WeightFormatError as e:
                raise IRError(f"op {self.name!r}: {e}") from None
            self.weight_format = fmt
        if not np.array_equal(fmt.decode(), self.weight):
            raise IRError(f"op {self.name!r}: weight codes differ from the decoded codebook "
                          f"indices (use with_codebook)")

    def with_codebook(self, fmt: CodebookWeights | None) -> Conv2d:
        """Attach (or with None drop) a codebook format; ``weight`` becomes its decoded codes."""
        if fmt is None:
            self.weight_format = None
            return self
        if tuple(fmt.shape) not in (tuple(self.weight.shape), tuple(self.weight.shape[:2])):
            raise IRError(f"op {self.name!r}: codebook format shape {fmt.shape} differs from "
                          f"the weight {self.weight.shape}")
        self.weight = fmt.decode().reshape(self.weight.shape)
        self.weight_format = fmt
        self._check_codebook()
        self._check_terms()
        return self

    def to_dict(self, arrays: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
        d = super().to_dict(arrays, prefix)
        if self.weight2 is not None:  # one-term layers serialise without it
            arrays[f"{prefix}weight2"] = np.ascontiguousarray(self.weight2)
            d["weight2"] = f"{prefix}weight2"
        fmt = self.weight_format
        if fmt is not None:  # raw layers serialise without codebook keys
            d["cb_k"], d["cb_d"] = int(fmt.k), int(fmt.d)
            for key, v in (("cb_codebook", fmt.codebook), ("cb_indices", fmt.indices)):
                arrays[f"{prefix}{key}"] = np.ascontiguousarray(v)
                d[key] = f"{prefix}{key}"
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], arrays: dict[str, np.ndarray]) -> Op:
        op = super().from_dict(d, arrays)
        assert isinstance(op, Conv2d)
        if d.get("weight2") is not None:
            op.weight2 = arrays[d["weight2"]]
            op._check_terms()
        given = [d.get(key) is not None for key in cls._CB_KEYS]
        if not any(given):
            return op
        if not all(given):
            raise IRError(f"op {op.name!r}: a codebook format needs all of "
                          f"{', '.join(cls._CB_KEYS)}")
        try:
            fmt = CodebookWeights(tuple(op.weight.shape), int(d["cb_k"]), int(d["cb_d"]),
                                  op.exp_bits, arrays[d["cb_codebook"]], arrays[d["cb_indices"]])
        except WeightFormatError as e:
            raise IRError(f"op {op.name!r}: {e}") from None
        op.weight_format = fmt
        op._check_codebook()
        return op

    @property
    def inputs(self) -> list[str]:
        return [self.input] + ([self.residual] if self.residual else [])

    @property
    def out_channels(self) -> int:
        return int(self.weight.shape[0])

    @property
    def in_channels(self) -> int:
        return int(self.weight.shape[1])

    @property
    def kernel(self) -> tuple[int, int]:
        return int(self.weight.shape[2]), int(self.weight.shape[3])

    def out_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        (h, w), (kh, kw) = in_hw, self.kernel
        t, left, b, r = self.padding
        sy, sx = self.stride
        oh = (h + t + b - kh) // sy + 1
        ow = (w + left + r - kw) // sx + 1
        return oh, ow

    def validate(self, tensors: dict[str, TensorSpec]) -> None:
        super().validate(tensors)
        x, y = tensors[self.input], tensors[self.output]
        kh, kw = self.kernel
        t, left, b, r = self.padding
        if x.shape[0] != self.in_channels:
            raise IRError(f"op {self.name!r}: input {x.name!r} has {x.shape[0]} channels, "
                          f"weights expect {self.in_channels}")
        if kh > x.shape[1] + t + b or kw > x.shape[2] + left + r:
            raise IRError(f"op {self.name!r}: kernel {kh}x{kw} larger than the padded input "
                          f"{x.shape[1] + t + b}x{x.shape[2] + left + r}")
        oh, ow = self.out_hw((x.shape[1], x.shape[2]))
        if y.shape != (self.out_channels, oh, ow):
            raise IRError(f"op {self.name!r}: output {y.name!r} has shape {y.shape}, "
                          f"expected {(self.out_channels, oh, ow)}")
        if self.residual is not None and tensors[self.residual].shape != y.shape:
            raise IRError(f"op {self.name!r}: residual {self.residual!r} shape "
                          f"{tensors[self.residual].shape} differs from output {y.shape}")

    def macs(self, tensors: dict[str, TensorSpec]) -> int:
        y = tensors[self.output]
        kh, kw = self.kernel
        return int(y.shape[0] * y.shape[1] * y.shape[2] * self.in_channels * kh * kw)

    def as_conv(self) -> Conv2d:
        return self


@register_op
@dataclass
class Linear(Conv2d):
    """Fully connected layer: a 1x1 convolution on a ``(I, 1, 1)`` input.

    ``weight`` is ``(O, I)`` shift codes (stored as ``(O, I, 1, 1)`` internally, so everything
    downstream treats it as a convolution).
    """

    kind: ClassVar[str] = "linear"

    def __post_init__(self) -> None:
        w = np.asarray(self.weight, dtype=np.int64)
        if w.ndim == 2:
            w = w[:, :, None, None]
        if w.ndim != 4 or w.shape[2:] != (1, 1):
            raise IRError(f"op {self.name!r}: linear weight must be (O, I), not {w.shape}")
        self.weight = w
        super().__post_init__()
        if self.stride != (1, 1) or self.padding != (0, 0, 0, 0):
            raise IRError(f"op {self.name!r}: linear layers take no stride or padding")

    def validate(self, tensors: dict[str, TensorSpec]) -> None:
        x = tensors.get(self.input)
        if x is not None and x.shape[1:] != (1, 1):
            raise IRError(f"op {self.name!r}: linear input {x.name!r} must be (C, 1, 1), "
                          f"not {x.shape} (flatten or pool first)")
        super().validate(tensors)
