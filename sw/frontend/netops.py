"""IR ops the network frontend needs beyond ``sw/ir.py``: max pooling and sum pooling.

They are additive: same style as :mod:`shiftbook.sw.ir` (typed dataclasses registered with
``register_op`` under their ``kind``, arrays/scalars saved by ``Graph.save``) so that a graph
holding them round-trips through JSON. Each op carries its golden integer implementation
(``run``), written with ``sw/numerics`` only, and matching the ISA's MAX and SUM modes
(docs/isa.md): padding positions are *invalid* (skipped), never zeros.

Residual add and flatten need no new op: a residual add is a ``Conv2d`` with ``residual`` set
(or, when no convolution can absorb it, an identity 1x1 ``Conv2d`` with a residual input), and
flatten is a no-op on a ``(C, 1, 1)`` tensor (a linear layer reading a flattened ``(C, H, W)``
tensor becomes a ``Conv2d`` whose kernel covers the whole input).

The network executor :func:`run_network` runs every op kind the frontend emits, on one image
``(C, H, W)`` or a batch ``(N, C, H, W)``; for ``Conv2d`` it uses the same rule as
``sw/reference.py`` (float64 convolution, exact for integer sums, then
``numerics.requantize``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F

from shiftbook.sw import numerics as nx
from shiftbook.sw.ir import Conv2d, Graph, IRError, Op, TensorSpec, register_op

__all__ = ["MaxPool2d", "SumPool2d", "run_network", "conv_acc_batch", "pool_out_hw",
           "window_view"]

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
class _Pool(Op):
    """Shared members of the pooling ops: window, stride, padding (top, left, bottom, right)."""

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
class MaxPool2d(_Pool):
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
class SumPool2d(_Pool):
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


# ---------------------------------------------------------------- network executor
def conv_acc_batch(x: np.ndarray, op: Conv2d) -> np.ndarray:
    """Accumulators ``(N, O, OH, OW)`` of ``op`` on int input ``(N, C, H, W)``; the rule of
    ``reference.conv_acc`` (float64 convolution of integers, exact below 2**53) on a batch."""
    w = nx.decode_shift(op.weight, op.exp_bits)
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))
    t, left, b, r = op.padding
    xt = F.pad(xt, (left, r, t, b))
    wt = torch.from_numpy(np.asarray(w, dtype=np.float64))
    y = F.conv2d(xt, wt, stride=op.stride).numpy()
    if not np.all(np.abs(y) < 2.0**52):
        raise IRError(f"op {op.name!r}: accumulator beyond exact float64 range")
    return np.rint(y).astype(np.int64)


def _run_conv(op: Conv2d, x: np.ndarray, res: np.ndarray | None) -> np.ndarray:
    acc = conv_acc_batch(x, op)
    c = acc.shape[1]
    return nx.requantize(acc, op.bias.reshape(1, c, 1, 1), op.shift.reshape(1, c, 1, 1),
                         relu=op.relu, residual=res,
                         res_shift=op.res_shift.reshape(1, c, 1, 1))


def run_network(graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute a graph holding ``Conv2d``/``Linear`` and the ops above.

    ``inputs`` maps each graph input to int8 values ``(C, H, W)`` (one image) or
    ``(N, C, H, W)`` (a batch). Returns every tensor, int64, with the same leading shape.
    """
    env: dict[str, np.ndarray] = {}
    single = None
    for name in graph.inputs:
        if name not in inputs:
            raise IRError(f"missing value for graph input {name!r}")
        a = np.asarray(inputs[name], dtype=np.int64)
        spec = graph.tensors[name]
        one = a.shape == spec.shape
        if not one and a.shape[1:] != spec.shape:
            raise IRError(f"input {name!r} has shape {a.shape}, expected {spec.shape} or "
                          f"(N, *{spec.shape})")
        if single is not None and single != one:
            raise IRError("graph inputs mix single images and batches")
        single = one
        if a.min(initial=0) < nx.ACT_MIN or a.max(initial=0) > nx.ACT_MAX:
            raise IRError(f"input {name!r} has values outside int8")
        env[name] = a[None] if one else a
    for op in graph.ops:
        if isinstance(op, Conv2d):
            res = env[op.residual] if op.residual else None
            env[op.output] = _run_conv(op, env[op.input], res)
        elif isinstance(op, MaxPool2d | SumPool2d):
            env[op.output] = op.run(env[op.input])
        else:
            raise IRError(f"op kind {op.kind!r} ({op.name!r}) has no golden implementation")
    if single:
        return {k: v[0] for k, v in env.items()}
    return env
