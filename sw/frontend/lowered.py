"""The frontend's result, :class:`Lowered`: the integer IR graph with the float network it
approximates, per-op reports and notes, and helpers to run it on float images (golden
executor ``sw/reference.run_graph``) and read its outputs back as real values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shiftbook.config import CoreConfig
from shiftbook.sw.ir import Graph
from shiftbook.sw.reference import run_graph

from .scales import quantize_input
from .trace import FloatNet

__all__ = ["Lowered"]


@dataclass
class Lowered:
    """The frontend's result.

    Members
    -------
    graph: the integer IR (``Conv2d``/``Linear`` + ``MaxPool2d``/``SumPool2d``).
    net: the float network it approximates (batch norm folded), for comparisons.
    config: the CoreConfig it was built for (``exp_bits``, ``acc_bits``).
    formats: op name -> compressed codebook format record whose codes the op keeps (its
        ``weight`` holds the same codes). Where the core can decode it, the op also carries it
        (``with_codebook``: ``cb_k``/``cb_d``/``cb_codebook``/``cb_indices``, so the compiler
        emits ``WFMT = 1``; ``op.weight_format`` is not None, ``layers[i]["wfmt"]`` says so).
    layers: one report dict per op (fracs, shifts, accumulator margin, weight source,
        ``wfmt``: ``"shift"`` or ``"codebook k=K d=D"``, gain).
    notes: one line per codebook layer that could not stay a codebook (compiled as shift
        codes: folding changed its codes, or the core cannot decode it), with the reason.
    """

    graph: Graph
    net: FloatNet
    config: CoreConfig
    formats: dict[str, Any] = field(default_factory=dict)
    layers: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def input(self) -> str:
        return self.graph.inputs[0]

    @property
    def output(self) -> str:
        return self.graph.outputs[0]

    @property
    def input_frac(self) -> int:
        return self.graph.tensors[self.input].frac

    def quantize_input(self, x: Any) -> np.ndarray:
        return quantize_input(x, self.input_frac)

    def run(self, x: Any) -> dict[str, np.ndarray]:
        """Every integer tensor for float images ``x`` ``(N, C, H, W)``."""
        return run_graph(self.graph, {self.input: self.quantize_input(x)})

    def dequantize(self, name: str, q: np.ndarray) -> np.ndarray:
        return np.asarray(q, dtype=np.float64) * 2.0 ** -self.graph.tensors[name].frac

    def summary(self) -> str:
        """One line per op: kind, output shape and frac, weight source, shifts, headroom."""
        lines = [f"{'op':28s} {'kind':10s} {'output':>14s} {'frac':>5s} {'weights':>9s} "
                 f"{'format':>18s} {'shift':>7s} {'acc headroom':>12s}"]
        for op, rep in zip(self.graph.ops, self.layers, strict=True):
            t = self.graph.tensors[op.output]
            sh = rep.get("shift")
            shift = "" if sh is None else (f"{sh[0]}" if sh[0] == sh[1] else f"{sh[0]}-{sh[1]}")
            head = rep.get("acc_headroom_bits")
            lines.append(f"{op.name:28s} {op.kind:10s} {'x'.join(map(str, t.shape)):>14s} "
                         f"{t.frac:5d} {rep.get('weights', ''):>9s} "
                         f"{rep.get('wfmt', ''):>18s} {shift:>7s} "
                         f"{'' if head is None else f'{head:.1f} bits':>12s}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def logits(self, x: Any) -> np.ndarray:
        """Dequantized outputs ``(N, classes)`` of the integer network."""
        q = self.run(x)[self.output]
        return self.dequantize(self.output, q).reshape(q.shape[0], -1)
