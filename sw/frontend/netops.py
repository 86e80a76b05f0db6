"""The network executor, and the pooling ops the frontend emits (re-exported from
:mod:`shiftbook.sw.ir`, where :class:`MaxPool2d` and :class:`SumPool2d` live with their
golden integer rules, matching the ISA's MAX and SUM modes: padding positions are skipped).

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

import numpy as np
import torch
import torch.nn.functional as F

from shiftbook import numerics as nx
from shiftbook.sw.ir import (
    Conv2d,
    Graph,
    IRError,
    MaxPool2d,
    SumPool2d,
    pool_out_hw,
    window_view,
)

__all__ = ["MaxPool2d", "SumPool2d", "run_network", "conv_acc_batch", "pool_out_hw",
           "window_view"]

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
