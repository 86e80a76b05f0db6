"""IR building blocks: the error type, int8 tensor specs, the op base class and the op registry.

Every op kind (``sw/ir_conv.py``, ``sw/ir_pool.py``) is a dataclass subclass of :class:`Op`,
registered in ``OP_TYPES`` under its ``kind`` by :func:`register_op` so ``Graph.load`` can
rebuild it from JSON; :class:`Op` turns its ``ARRAYS``/``SCALARS`` members into the saved
JSON + npz form. ``shiftbook.sw.ir`` re-exports every public name.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

__all__ = ["IRError", "TensorSpec", "Op", "OP_TYPES", "register_op"]


class IRError(ValueError):
    """A malformed IR graph (the message names the op or tensor)."""


@dataclass(frozen=True)
class TensorSpec:
    """An int8 activation tensor ``(C, H, W)`` with power-of-two scale ``2**-frac``."""

    name: str
    shape: tuple[int, int, int]
    frac: int = 0

    def __post_init__(self) -> None:
        if len(self.shape) != 3 or any(int(s) <= 0 for s in self.shape):
            raise IRError(f"tensor {self.name!r}: shape {self.shape} must be 3 positive ints "
                          f"(C, H, W)")
        object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "frac": int(self.frac)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TensorSpec:
        return cls(d["name"], tuple(d["shape"]), int(d["frac"]))


OP_TYPES: dict[str, type[Op]] = {}


def register_op(cls: type[Op]) -> type[Op]:
    """Class decorator: make an op kind loadable from JSON."""
    OP_TYPES[cls.kind] = cls
    return cls


@dataclass
class Op:
    """Base of all ops: a name, input tensor names and one output tensor name.

    Subclasses list their array members in ``ARRAYS`` (saved to the npz) and their scalar
    members in ``SCALARS`` (saved to the JSON). Op kinds other than ``Conv2d``/``Linear``
    define their golden integer rule as ``run(*inputs) -> output`` (int arrays, ``inputs`` in
    the order of :attr:`inputs`); ``sw/reference.run_graph`` calls it.
    """

    kind: ClassVar[str] = "op"
    ARRAYS: ClassVar[tuple[str, ...]] = ()
    SCALARS: ClassVar[tuple[str, ...]] = ()

    name: str
    input: str
    output: str

    @property
    def inputs(self) -> list[str]:
        return [self.input]

    def validate(self, tensors: dict[str, TensorSpec]) -> None:
        for t in [*self.inputs, self.output]:
            if t not in tensors:
                raise IRError(f"op {self.name!r}: unknown tensor {t!r}")

    def to_dict(self, arrays: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "name": self.name, "input": self.input,
                             "output": self.output}
        for s in self.SCALARS:
            v = getattr(self, s)
            d[s] = list(v) if isinstance(v, tuple) else v
        for a in self.ARRAYS:
            v = getattr(self, a)
            if v is None:
                d[a] = None
            else:
                key = f"{prefix}{a}"
                arrays[key] = np.ascontiguousarray(v)
                d[a] = key
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], arrays: dict[str, np.ndarray]) -> Op:
        kw: dict[str, Any] = {"name": d["name"], "input": d["input"], "output": d["output"]}
        for s in cls.SCALARS:
            v = d.get(s)
            kw[s] = tuple(v) if isinstance(v, list) else v
        for a in cls.ARRAYS:
            key = d.get(a)
            kw[a] = None if key is None else arrays[key]
        return cls(**kw)
