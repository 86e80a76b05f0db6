"""Integer IR: the network as the accelerator computes it (int8 tensors, shift-code weights).

A :class:`Graph` holds named tensors (:class:`TensorSpec`, shape ``(C, H, W)``, int8,
``real = q * 2**-frac``) and a list of ops in execution order. Each op reads and writes tensors
by name. Ops are typed dataclasses registered in ``OP_TYPES`` under their ``kind``:
``conv2d`` and ``linear`` (:class:`Conv2d`, :class:`Linear`; a residual add is a conv's
``residual`` input), ``maxpool2d`` and ``sumpool2d`` (:class:`MaxPool2d`, :class:`SumPool2d`,
the ISA's MAX and SUM modes; a global average pool is a sum pool whose ``1/(KH*KW)`` the
frontend folds into the next layer). Further kinds register without changing these.

Save/load: ``graph.save(dir, stem)`` writes ``<stem>.json`` (structure) and ``<stem>.npz``
(arrays, written deterministically: same graph -> same bytes); ``Graph.load`` reads them back.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from shiftbook import numerics as nx
from shiftbook.weights import CodebookWeights, WeightFormatError

__all__ = [
    "IRError", "TensorSpec", "Op", "Conv2d", "Linear", "PoolOp", "MaxPool2d", "SumPool2d", "Graph",
    "OP_TYPES", "register_op", "IR_VERSION", "pool_out_hw", "window_view",
]

IR_VERSION = 1


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
        return self

    def to_dict(self, arrays: dict[str, np.ndarray], prefix: str) -> dict[str, Any]:
        d = super().to_dict(arrays, prefix)
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


# ---------------------------------------------------------------- pooling
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
