"""Integer IR: the network as the accelerator computes it (int8 tensors, shift-code weights).

A :class:`Graph` holds named tensors (:class:`TensorSpec`, shape ``(C, H, W)``, int8,
``real = q * 2**-frac``) and a list of ops in execution order. Each op reads and writes tensors
by name. Ops are typed dataclasses registered in ``OP_TYPES`` under their ``kind``:
``conv2d`` and ``linear`` (:class:`Conv2d`, :class:`Linear`; a residual add is a conv's
``residual`` input), ``maxpool2d`` and ``sumpool2d`` (:class:`MaxPool2d`, :class:`SumPool2d`,
the ISA's MAX and SUM modes; a global average pool is a sum pool whose ``1/(KH*KW)`` the
frontend folds into the next layer). Further kinds register without changing these.

Where the parts live (all re-exported here, import them from ``shiftbook.sw.ir``): the error
type, tensor specs, op base and registry in ``sw/ir_base.py``; the MAC ops in ``sw/ir_conv.py``;
the pooling ops and window helpers in ``sw/ir_pool.py``; the graph container and its
save/load in this file.

Save/load: ``graph.save(dir, stem)`` writes ``<stem>.json`` (structure) and ``<stem>.npz``
(arrays, written deterministically: same graph -> same bytes); ``Graph.load`` reads them back.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .ir_base import OP_TYPES, IRError, Op, TensorSpec, register_op
from .ir_conv import Conv2d, Linear
from .ir_pool import MaxPool2d, PoolOp, SumPool2d, pool_out_hw, window_view

__all__ = [
    "IRError", "TensorSpec", "Op", "Conv2d", "Linear", "PoolOp", "MaxPool2d", "SumPool2d", "Graph",
    "OP_TYPES", "register_op", "IR_VERSION", "pool_out_hw", "window_view",
]

IR_VERSION = 1


@dataclass
class Graph:
    """Tensors, ops in execution order, graph inputs and outputs."""

    tensors: dict[str, TensorSpec] = field(default_factory=dict)
    ops: list[Op] = field(default_factory=list)
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def add_tensor(self, t: TensorSpec) -> TensorSpec:
        if t.name in self.tensors:
            raise IRError(f"tensor {t.name!r} defined twice")
        self.tensors[t.name] = t
        return t

    def add_op(self, op: Op) -> Op:
        op.validate(self.tensors)
        self.ops.append(op)
        return op

    def validate(self) -> None:
        known = set(self.inputs)
        for name in self.inputs:
            if name not in self.tensors:
                raise IRError(f"graph input {name!r} is not a tensor")
        for op in self.ops:
            op.validate(self.tensors)
            for t in op.inputs:
                if t not in known:
                    raise IRError(f"op {op.name!r} reads {t!r} before anything writes it")
            if op.output in known:
                raise IRError(f"op {op.name!r} writes {op.output!r}, which is already defined")
            known.add(op.output)
        for name in self.outputs:
            if name not in known:
                raise IRError(f"graph output {name!r} is never computed")

    # ---- serialisation ----
    def to_json_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays: dict[str, np.ndarray] = {}
        ops = [op.to_dict(arrays, f"op{i}.") for i, op in enumerate(self.ops)]
        doc = {
            "ir_version": IR_VERSION,
            "tensors": [t.to_dict() for t in self.tensors.values()],
            "ops": ops,
            "inputs": list(self.inputs),
            "outputs": list(self.outputs),
        }
        return doc, arrays

    @classmethod
    def from_json_arrays(cls, doc: dict[str, Any], arrays: dict[str, np.ndarray]) -> Graph:
        if doc.get("ir_version") != IR_VERSION:
            raise IRError(f"unknown IR version {doc.get('ir_version')!r} "
                          f"(this shiftbook reads {IR_VERSION})")
        g = cls(inputs=list(doc["inputs"]), outputs=list(doc["outputs"]))
        for td in doc["tensors"]:
            g.add_tensor(TensorSpec.from_dict(td))
        for od in doc["ops"]:
            kind = od.get("kind")
            if kind not in OP_TYPES:
                raise IRError(f"unknown op kind {kind!r} (known: {', '.join(OP_TYPES)})")
            g.ops.append(OP_TYPES[kind].from_dict(od, arrays))
        g.validate()
        return g

    def save(self, directory: str | Path, stem: str = "ir") -> tuple[Path, Path]:
        """Write ``<stem>.json`` and ``<stem>.npz``; byte-identical for identical graphs."""
        directory = Path(directory)
        doc, arrays = self.to_json_arrays()
        jpath, npath = directory / f"{stem}.json", directory / f"{stem}.npz"
        jpath.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
        npath.write_bytes(npz_bytes(arrays))
        return jpath, npath

    @classmethod
    def load(cls, directory: str | Path, stem: str = "ir") -> Graph:
        directory = Path(directory)
        doc = json.loads((directory / f"{stem}.json").read_text())
        with np.load(directory / f"{stem}.npz", allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls.from_json_arrays(doc, arrays)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An ``.npz`` archive with fixed timestamps and sorted members (deterministic bytes)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        for key in sorted(arrays):
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with zf.open(info, "w") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(arrays[key]),
                                          allow_pickle=False)
    return buf.getvalue()
