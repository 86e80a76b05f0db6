"""ONNX and QONNX models -> the frontend's :class:`FloatNet` (docs/frontend.md, "ONNX and
QONNX").

``load_onnx(path)`` reads the file with ``onnx``, cleans it up with ``qonnx`` (shape inference,
constant folding that keeps the ``Quant`` nodes), then walks the graph's nodes in order into the
same float network the ``torch.export`` tracer builds (:mod:`.trace`): convolutions and
``Gemm``/``MatMul`` become layers, ``BatchNormalization`` is folded into the layer before it,
``Relu`` and residual ``Add`` are fused into their producer, pools become max / sum pools (an
average's ``1/(KH*KW)`` folded into the next layer). The QONNX quantizers are read as facts:
weight ``Quant``/``BipolarQuant`` nodes say which shift codes to keep (:mod:`.onnx_quant`),
activation ``Quant``/``Trunc`` nodes give the IR's activation scales.

Anything else is refused before any quantization, naming the node, its op type and its position.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FrontendError
from .float_net import WEIGHTED, FLayer, FloatNet
from .onnx_quant import QUANT_OPS, weight_quant
from .trace_nodes import Act

__all__ = ["OnnxSource", "load_onnx", "read_model", "ir_name"]

#: Op types that change nothing in eval mode.
PASS_OPS = ("Identity", "Dropout")


def ir_name(name: str, fallback: str) -> str:
    """An ONNX node or tensor name as an IR name (letters, digits, ``_`` and ``.``)."""
    s = re.sub(r"[^A-Za-z0-9_.]+", "_", name).strip("_.")
    return s or fallback


def read_model(path: str | Path) -> Any:
    """The cleaned-up ``qonnx`` ``ModelWrapper`` of the ``.onnx`` file at ``path`` (one-line
    :class:`FrontendError` for a missing or malformed file)."""
    import onnx
    from qonnx.core.modelwrapper import ModelWrapper
    from qonnx.transformation.fold_constants import FoldConstants
    from qonnx.transformation.general import RemoveUnusedTensors
    from qonnx.transformation.infer_shapes import InferShapes

    p = Path(path)
    if not p.is_file():
        raise FrontendError(f"{p} does not exist")
    try:
        proto = onnx.load(str(p))
        if not proto.graph.node:
            raise ValueError("the graph has no nodes")
    except Exception as e:  # noqa: BLE001 - any decoding failure is a malformed file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise FrontendError(f"cannot read {p}: not an ONNX model ({first})") from None
    for n in proto.graph.node:      # qonnx executes its quantizers from this domain
        if n.op_type in QUANT_OPS:
            n.domain = "qonnx.custom_op.general"
    try:
        model = ModelWrapper(proto)
        # cleanup=False: qonnx's cleanup re-sorts the nodes; the file's (topological) order is
        # the IR's op order
        model = model.transform(InferShapes(), cleanup=False)
        model = model.transform(FoldConstants(exclude_op_types=list(QUANT_OPS)), cleanup=False)
        model = model.transform(RemoveUnusedTensors(), cleanup=False)
    except Exception as e:  # noqa: BLE001 - shape inference on a broken graph
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
        raise FrontendError(f"cannot read {p}: ONNX shape inference failed ({first})") from None
    return model


@dataclass
class OnnxSource:
    """An ONNX / QONNX model read for lowering: the float network, the activation scales its
    quantizers fix (IR tensor -> frac), notes on what is converted rather than kept, and the
    model itself (the reference executor's input)."""

    net: FloatNet
    fracs: dict[str, int]
    notes: list[str]
    model: Any
    path: Path
    qonnx: bool
    converted: list[str] = field(default_factory=list)
    exp_bits: int = 4

    @property
    def label(self) -> str:
        return self.path.name

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.net.input_shape

    def float_net(self, exp_bits: int) -> FloatNet:
        """The float network with its kept shift codes for ``exp_bits``."""
        if exp_bits != self.exp_bits:
            self.net, self.exp_bits = _Walker(self.model, exp_bits).run(), exp_bits
        return self.net

    def quantize(self, calib: Any, config: Any, **kw: Any) -> Any:
        """The :class:`~.lowered.Lowered` IR on ``calib`` (:func:`.onnx_lower.lower_onnx`)."""
        from .onnx_lower import lower_onnx

        return lower_onnx(self, calib, config, **kw)


class _Walker:
    """Walks a cleaned ONNX graph's nodes in order into a :class:`FloatNet`."""

    def __init__(self, model: Any, exp_bits: int) -> None:
        self.model = model
        self.exp_bits = exp_bits
        self.consts: dict[str, np.ndarray] = {}
        self.wq: dict[str, Any] = {}        # tensor -> WeightQuant facts
        self.env: dict[str, Act] = {}
        self.layers: list[FLayer] = []
        self.names: set[str] = set()
        self.tnames: set[str] = set()
        self.fracs: dict[str, int] = {}
        self.notes: list[str] = []
        self.converted: list[str] = []
        self.users: dict[str, int] = {}
        self.node: Any = None
        self.pos = ""
        for init in model.graph.initializer:
            self.consts[init.name] = np.asarray(model.get_initializer(init.name))
        for n in model.graph.node:
            for i in n.input:
                self.users[i] = self.users.get(i, 0) + 1
        for o in model.graph.output:
            self.users[o.name] = self.users.get(o.name, 0) + 1

    # ---- helpers
    def where(self) -> str:
        n = self.node
        label = n.name or (n.output[0] if n.output else "")
        return f"node '{label}' (op {n.op_type}, {self.pos})"

    def fail(self, why: str) -> FrontendError:
        return FrontendError(f"unsupported ONNX {self.where()}: {why}")

    def attr(self, name: str, default: Any = None) -> Any:
        import onnx

        for a in self.node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    def unique(self, base: str, tensor: bool = False) -> str:
        """``base``, or ``base_N``: unique among layer (or tensor) names."""
        names = self.tnames if tensor else self.names
        name, i = base, 1
        while name in names:
            name, i = f"{base}_{i}", i + 1
        names.add(name)
        return name

    def act(self, i: int = 0) -> Act:
        name = self.node.input[i]
        if name not in self.env:
            raise self.fail(f"input {name!r} is not an activation tensor")
        return self.env[name]

    def const(self, i: int, what: str) -> np.ndarray | None:
        if i >= len(self.node.input) or not self.node.input[i]:
            return None
        name = self.node.input[i]
        if name not in self.consts:
            raise self.fail(f"{what} {name!r} must be a constant (an initializer)")
        return self.consts[name]

    def fusable(self, name: str) -> FLayer | None:
        """The weighted layer producing tensor ``name`` if this node is its only reader and it
        has no ReLU yet and nothing pending (so this node may fold into it)."""
        a = self.env.get(name)
        if a is None or a.layer is None or a.layer.kind not in WEIGHTED:
            return None
        if self.users.get(name, 0) != 1 or a.layer.relu or a.scale != 1.0 or a.flat:
            return None
        return a.layer if a.layer.output == a.tensor else None

    def rename(self, lay: FLayer, onnx_out: str) -> Act:
        """``lay`` now ends at this node's output (a fused ReLU, quantizer or add)."""
        if lay is self.layers[-1] and lay.output not in self.fracs:
            self.tnames.discard(lay.output)
            lay.output = self.unique(ir_name(onnx_out, lay.name), tensor=True)
        return Act(lay.output, lay.out_shape, lay)

    def add_layer(self, lay: FLayer) -> Act:
        self.layers.append(lay)
        return Act(lay.output, lay.out_shape, lay)

    def new_layer(self, kind: str, src: Act, shape: tuple[int, int, int], **kw: Any) -> FLayer:
        base = ir_name(self.node.name, f"{self.node.op_type.lower()}{len(self.layers)}")
        name = self.unique(base)
        out = self.unique(ir_name(self.node.output[0], name + "_out"), tensor=True)
        return FLayer(kind, name, src.tensor, out, shape, self.where(), module=self.node.name,
                      **kw)

    # ---- walk
    def run(self) -> FloatNet:
        g = self.model.graph
        inits = set(self.consts)
        inputs = [i for i in g.input if i.name not in inits]
        if len(inputs) != 1:
            raise FrontendError(f"the ONNX model takes {len(inputs)} inputs; the frontend "
                                f"lowers models with one image input")
        shape = self.model.get_tensor_shape(inputs[0].name)
        if shape is None or len(shape) != 4 or not all(isinstance(s, int) and s > 0
                                                        for s in shape[1:]):
            raise FrontendError(f"ONNX input {inputs[0].name!r} has shape {shape}; expected "
                                f"an image batch (N, C, H, W)")
        chw = (int(shape[1]), int(shape[2]), int(shape[3]))
        name = self.unique(ir_name(inputs[0].name, "input"), tensor=True)
        net = FloatNet(input=name, input_shape=chw)
        self.env[inputs[0].name] = Act(name, chw, None)
        nodes = list(g.node)
        for k, node in enumerate(nodes):
            self.node, self.pos = node, f"position {k + 1} of {len(nodes)}"
            self.visit(node)
        for o in g.output:
            a = self.env.get(o.name)
            if a is None:
                raise FrontendError(f"ONNX output {o.name!r} is not an activation tensor")
            if a.scale != 1.0:
                raise FrontendError(f"ONNX output {o.name!r} is an average pool's result; its "
                                    f"1/(H*W) can only be folded into a following layer")
            net.outputs.append(a.tensor)
        net.layers = self.layers
        net.shapes = {name: chw, **{lay.output: lay.out_shape for lay in self.layers}}
        return net

    def visit(self, node: Any) -> None:
        op = node.op_type
        need = _MIN_INPUTS.get(op, 1)
        if len(node.output) < 1 or sum(1 for i in node.input if i) < need:
            raise FrontendError(f"malformed ONNX {self.where()}: {len(node.input)} inputs and "
                                f"{len(node.output)} outputs; {op} takes at least {need} "
                                f"input(s) and one output")
        try:
            self._visit(node, op)
        except FrontendError:
            raise
        except (IndexError, KeyError, ValueError, TypeError, ZeroDivisionError,
                AttributeError, OverflowError) as e:
            # a graph that passed shape inference but is inconsistent in a way the handlers
            # do not name (a wrong attribute or initializer shape): one line naming the node
            first = (str(e).strip().splitlines() or [""])[0][:120]
            raise FrontendError(f"malformed ONNX {self.where()}: {type(e).__name__} "
                                f"{first}".rstrip()) from None

    def _visit(self, node: Any, op: str) -> None:
        if op in QUANT_OPS and all(i in self.consts for i in node.input if i):
            self.consts[node.output[0]], self.wq[node.output[0]] = weight_quant(
                node, self.consts, self.where())
            return
        if op == "Constant":
            self.consts[node.output[0]] = _constant_value(node)
            return
        handler = getattr(self, f"op_{op}", None)
        if op in PASS_OPS:
            handler = self.op_pass
        if handler is None:
            raise self.fail("the accelerator has no such operation")
        out = handler()
        if out is not None:
            self.env[node.output[0]] = out

    from .onnx_ops import (  # noqa: E402 - the op handlers live in their own module
        op_Add,
        op_AveragePool,
        op_BatchNormalization,
        op_Conv,
        op_Flatten,
        op_Gemm,
        op_GlobalAveragePool,
        op_MatMul,
        op_MaxPool,
        op_Mul,
        op_pass,
        op_Quant,
        op_ReduceMean,
        op_Relu,
        op_Reshape,
        op_Trunc,
    )
    op_BipolarQuant = op_Quant


#: inputs an op needs (non-empty names); others take at least one
_MIN_INPUTS = {"Conv": 2, "Gemm": 2, "MatMul": 2, "BatchNormalization": 5, "Add": 2, "Mul": 2,
               "Quant": 4, "BipolarQuant": 2, "Trunc": 6, "Reshape": 2, "Constant": 0}


def _constant_value(node: Any) -> np.ndarray:
    import onnx.numpy_helper as nh

    for a in node.attribute:
        if a.name == "value":
            return np.asarray(nh.to_array(a.t))
    raise FrontendError(f"Constant node {node.name!r} has no tensor value")


def load_onnx(path: str | Path, exp_bits: int = 4) -> OnnxSource:
    """Read ``path`` (plain ONNX or QONNX) into an :class:`OnnxSource`.

    The ONNX tools' own messages are captured: Python warnings (qonnx's shape checks) become
    notes of a model that loads and are dropped for one that is refused (the refusal is one
    line); onnxruntime (constant folding, qonnx's executor) logs only fatal messages."""
    import onnxruntime

    onnxruntime.set_default_logger_severity(4)      # its warnings/errors go to fd 2 otherwise
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = read_model(path)
        w = _Walker(model, exp_bits)
        try:
            net = w.run()
        except FrontendError as e:
            raise FrontendError(f"{path}: {e}") from None
    told = list(dict.fromkeys(f"ONNX tools warned: {str(c.message).strip()[:200]}"
                              for c in caught))
    qonnx = any(n.op_type in QUANT_OPS for n in model.graph.node)
    return OnnxSource(net, dict(w.fracs), list(w.notes) + told, model, Path(path), qonnx,
                      list(w.converted), exp_bits=exp_bits)

