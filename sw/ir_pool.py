"""IR pooling ops: :class:`MaxPool2d` and :class:`SumPool2d` (the ISA's MAX and SUM modes) on
their shared base :class:`PoolOp`, with the window helpers the golden rules and the frontend use
(:func:`pool_out_hw`, :func:`window_view`).

A global average pool is a sum pool whose ``1/(KH*KW)`` the frontend folds into the next layer.
``shiftbook.sw.ir`` re-exports every public name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from shiftbook import numerics as nx

from .ir_base import IRError, Op, TensorSpec, register_op

__all__ = ["PoolOp", "MaxPool2d", "SumPool2d", "pool_out_hw", "window_view"]


# Accumulator start value of MAX mode in the golden model: below every int8 value (the
# hardware starts at the most negative accumulator value; after saturation both give -128).
_MAX_INIT = -(1 << 40)


def pool_out_hw(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int, int, int]) -> tuple[int, int]:
    (h, w), (kh, kw), (sy, sx) = in_hw, kernel, stride
    t, left, b, r = padding
    return (h + t + b - kh) // sy + 1, (w + left + r - kw) // sx + 1


def window_view(x: np.ndarray, kernel: tuple[int, int], stride: tuple[int, int],
                padding: tuple[int, int, int, int], fill: int) -> np.ndarray:
    """Sliding windows over the last two axes: ``(..., OH, OW, KH, KW)`` (``fill`` in padding)."""
    t, left, b, r = padding
    pad = [(0, 0)] * (x.ndim - 2) + [(t, b), (left, r)]
    xp = np.pad(np.asarray(x, dtype=np.int64), pad, constant_values=fill)
    win = np.lib.stride_tricks.sliding_window_view(xp, kernel, axis=(-2, -1))
    return win[..., ::stride[0], ::stride[1], :, :]


@dataclass
class PoolOp(Op):
    """Base of the pooling ops (:class:`MaxPool2d`, :class:`SumPool2d`): window, stride and
    padding (top, left, bottom, right), their checks and the output size."""

    SCALARS: ClassVar[tuple[str, ...]] = ("kernel", "stride", "padding")

    kernel: tuple[int, int] = (2, 2)
    stride: tuple[int, int] = (2, 2)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)

    def __post_init__(self) -> None:
        self.kernel = tuple(int(k) for k in self.kernel)  # type: ignore[assignment]
        self.stride = tuple(int(s) for s in self.stride)  # type: ignore[assignment]
        self.padding = tuple(int(p) for p in self.padding)  # type: ignore[assignment]
        if len(self.kernel) != 2 or min(self.kernel) < 1:
            raise IRError(f"op {self.name!r}: kernel {self.kernel} must be two ints >= 1")
        if len(self.stride) != 2 or min(self.stride) < 1:
            raise IRError(f"op {self.name!r}: stride {self.stride} must be two ints >= 1")
        if len(self.padding) != 4 or min(self.padding) < 0:
            raise IRError(f"op {self.name!r}: padding {self.padding} must be four ints >= 0")
        t, left, b, r = self.padding
        kh, kw = self.kernel
        if max(t, b) >= kh or max(left, r) >= kw:
            raise IRError(f"op {self.name!r}: padding {self.padding} must be smaller than the "
                          f"kernel {self.kernel} (every window needs a valid position)")

    def out_hw(self, in_hw: tuple[int, int]) -> tuple[int, int]:
        return pool_out_hw(in_hw, self.kernel, self.stride, self.padding)

    def validate(self, tensors: dict[str, TensorSpec]) -> None:
        super().validate(tensors)
        x, y = tensors[self.input], tensors[self.output]
        t, left, b, r = self.padding
        if self.kernel[0] > x.shape[1] + t + b or self.kernel[1] > x.shape[2] + left + r:
            raise IRError(f"op {self.name!r}: window {self.kernel} larger than the padded input")
        want = (x.shape[0], *self.out_hw((x.shape[1], x.shape[2])))
        if y.shape != want:
            raise IRError(f"op {self.name!r}: output {y.name!r} has shape {y.shape}, "
                          f"expected {want}")

    def macs(self, tensors: dict[str, TensorSpec]) -> int:
        y = tensors[self.output]
        return int(y.shape[0] * y.shape[1] * y.shape[2] * self.kernel[0] * self.kernel[1])


@register_op
@dataclass
class MaxPool2d(PoolOp):
    """Max pooling (ISA MODE MAX): per channel, the largest value over the window's valid
    positions; padding positions are skipped. Output scale = input scale (``frac`` equal).

    Golden: ``requantize(max, bias=0, shift=0)`` (a saturation that never clips int8 inputs).
    """

    kind: ClassVar[str] = "maxpool2d"

    def validate(self, tensors: dict[str, TensorSpec]) -> None:
        super().validate(tensors)
        if tensors[self.input].frac != tensors[self.output].frac:
            raise IRError(f"op {self.name!r}: max pooling keeps the scale, but input frac "
                          f"{tensors[self.input].frac} != output frac "
                          f"{tensors[self.output].frac}")

    def run(self, x: np.ndarray) -> np.ndarray:
        """``x`` int ``(..., C, H, W)`` -> int8 values ``(..., C, OH, OW)``."""
        win = window_view(x, self.kernel, self.stride, self.padding, _MAX_INIT)
        acc = win.max(axis=(-2, -1))
        return nx.requantize(acc, 0, 0)


@register_op
@dataclass
class SumPool2d(PoolOp):
    """Sum pooling (ISA MODE SUM): per channel, the sum over the window's valid positions, then
    ``requantize(sum, bias=0, shift)``; output ``frac`` = input ``frac`` - ``shift``.

    Average pooling lowers to this: the ``1/(KH*KW)`` is folded into the next layer's weights,
    so the output tensor holds the (shifted) *sum*, not the mean.
    """

    kind: ClassVar[str] = "sumpool2d"
    SCALARS: ClassVar[tuple[str, ...]] = ("kernel", "stride", "padding", "shift")

    shift: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        self.shift = int(self.shift)
        if self.shift < 0:
            raise IRError(f"op {self.name!r}: shift {self.shift} must be >= 0")

    def validate(self, tensors: dict[str, TensorSpec]) -> None:
        super().validate(tensors)
        fi, fo = tensors[self.input].frac, tensors[self.output].frac
        if fo != fi - self.shift:
            raise IRError(f"op {self.name!r}: output frac {fo} must be input frac {fi} - "
                          f"shift {self.shift}")

    def run(self, x: np.ndarray) -> np.ndarray:
        acc = window_view(x, self.kernel, self.stride, self.padding, 0).sum(axis=(-2, -1))
        return nx.requantize(acc, 0, self.shift)
