"""The integer IR as a QONNX model (``shiftbook export --qonnx``), so FINN / hls4ml users can
compare flows on the same network.

Each op becomes standard ONNX nodes between QONNX quantizers (domain
``qonnx.custom_op.general``):

- the input: ``Quant`` at its scale ``2**-frac`` (signed 8-bit);
- ``conv2d``: a weight ``Quant`` (the shift codes' values as integers, per-output-channel scale
  ``2**-w_frac``), ``Conv`` with the bias at accumulator scale, then ``Add`` of the residual,
  ``Relu``, and a ``Quant`` at the output scale (unsigned 7-bit after a ReLU, else signed
  8-bit, ``HALF_UP``); ``linear``: the same around ``Flatten`` + ``Gemm``;
- ``maxpool2d``: ``MaxPool`` (its output keeps its input's scale);
- ``sumpool2d``: ``AveragePool`` times ``KH*KW`` (a sum), then the output ``Quant``.

Node and tensor names are the IR's, so importing the file again (:mod:`.onnx_import`) gives the
same IR: the same bundle, byte for byte. Differences from the core: the float graph rounds ties
of negative values away from zero where the core rounds toward +inf, and a bias beyond 2**24
at accumulator scale is rounded to float32.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from shiftbook.sw.ir import Graph

__all__ = ["graph_to_qonnx", "save_qonnx", "QONNX_DOMAIN"]

QONNX_DOMAIN = "qonnx.custom_op.general"


class _Emitter:
    def __init__(self, graph: Graph) -> None:
        self.g = graph
        self.nodes: list[Any] = []
        self.inits: list[Any] = []
        self.env: dict[str, str] = {}       # IR tensor -> ONNX tensor holding it

    def const(self, name: str, value: Any) -> str:
        from onnx import numpy_helper

        self.inits.append(numpy_helper.from_array(np.asarray(value, np.float32), name))
        return name

    def node(self, op: str, ins: list[str], out: str, name: str, domain: str = "",
             **attrs: Any) -> str:
        from onnx import helper

        self.nodes.append(helper.make_node(op, ins, [out], name=name, domain=domain, **attrs))
        return out

    def quant(self, x: str, out: str, name: str, scale: Any, bits: int, signed: bool,
              rounding: str = "HALF_UP") -> str:
        s = self.const(f"{name}.scale", scale)
        z = self.const(f"{name}.zeropt", 0.0)
        b = self.const(f"{name}.bits", float(bits))
        return self.node("Quant", [x, s, z, b], out, name, QONNX_DOMAIN,
                         signed=int(signed), narrow=0, rounding_mode=rounding)

    def act_quant(self, x: str, tensor: str, name: str, relu: bool) -> None:
        f = self.g.tensors[tensor].frac
        self.env[tensor] = self.quant(x, tensor, name, 2.0 ** -f, 7 if relu else 8,
                                      not relu)

    def conv(self, op: Any) -> None:
        g = self.g
        in_frac = g.tensors[op.input].frac
        ints = op.values().astype(np.float64)
        o = ints.shape[0]
        wf = np.asarray(op.w_frac, np.int64)
        linear = op.kind == "linear"
        shape = (o, 1) if linear else (o, 1, 1, 1)
        if linear:
            ints = ints.reshape(o, -1)
        scale = np.exp2(-wf.astype(np.float64)).reshape(shape)
        w = self.const(f"{op.name}.weight_float", ints * scale)     # exact in float32
        bits = int(np.abs(ints).max(initial=1)).bit_length() + 1
        wq = self.quant(w, f"{op.name}.weight", f"{op.name}__wq", scale, bits, True,
                        rounding="ROUND")
        bias = self.const(f"{op.name}.bias", np.asarray(op.bias, np.float64)
                          * np.exp2(-(in_frac + wf).astype(np.float64)))
        x = self.env[op.input]
        if linear:
            x = self.node("Flatten", [x], f"{op.output}__flat", f"{op.name}__flatten", axis=1)
            y = self.node("Gemm", [x, wq, bias], f"{op.output}__acc", op.name, transB=1)
        else:
            t, left, b, r = op.padding
            kh, kw = int(op.weight.shape[2]), int(op.weight.shape[3])
            y = self.node("Conv", [x, wq, bias], f"{op.output}__acc", op.name,
                          kernel_shape=[kh, kw], strides=list(op.stride),
                          pads=[t, left, b, r], group=1)
        if op.residual:
            y = self.node("Add", [y, self.env[op.residual]], f"{op.output}__add",
                          f"{op.name}__add")
        if op.relu:
            y = self.node("Relu", [y], f"{op.output}__relu", f"{op.name}__relu")
        self.act_quant(y, op.output, f"{op.name}__q", bool(op.relu))

    def pool(self, op: Any) -> None:
        t, left, b, r = op.padding
        kw = dict(kernel_shape=list(op.kernel), strides=list(op.stride), pads=[t, left, b, r])
        x = self.env[op.input]
        if op.kind == "maxpool2d":
            self.env[op.output] = self.node("MaxPool", [x], op.output, op.name, **kw)
            return
        y = self.node("AveragePool", [x], f"{op.output}__avg", op.name, count_include_pad=1,
                      **kw)
        k = self.const(f"{op.name}.count", float(op.kernel[0] * op.kernel[1]))
        y = self.node("Mul", [y, k], f"{op.output}__sum", f"{op.name}__sum")
        self.act_quant(y, op.output, f"{op.name}__q", False)

    def run(self, name: str) -> Any:
        from onnx import TensorProto, helper

        g = self.g
        if len(g.inputs) != 1:
            raise ValueError(f"the IR has {len(g.inputs)} inputs; QONNX export takes one")
        inp = g.inputs[0]
        c, h, w = g.tensors[inp].shape
        self.env[inp] = self.quant(inp, f"{inp}__q", f"{inp}__q",
                                   2.0 ** -g.tensors[inp].frac, 8, True)
        read = {t for op in g.ops for t in (op.input, getattr(op, "residual", None)) if t}
        for op in g.ops:
            if op.kind == "linear" and op.output in read:
                raise ValueError(f"op {op.name!r}: a linear layer read by another op has no "
                                 f"QONNX export (its output is 2-D there)")
            if op.kind in ("conv2d", "linear"):
                self.conv(op)
            elif op.kind in ("maxpool2d", "sumpool2d"):
                self.pool(op)
            else:
                raise ValueError(f"op {op.name!r}: kind {op.kind} has no QONNX export")
        outs = []
        for t in g.outputs:
            oc, oh, ow = g.tensors[t].shape
            last = next(op for op in g.ops if op.output == t)
            shape = [1, oc] if last.kind == "linear" else [1, oc, oh, ow]
            outs.append(helper.make_tensor_value_info(self.env[t], TensorProto.FLOAT, shape))
        graph = helper.make_graph(
            self.nodes, name,
            [helper.make_tensor_value_info(inp, TensorProto.FLOAT, [1, c, h, w])], outs,
            initializer=self.inits)
        model = helper.make_model(graph, producer_name="shiftbook", opset_imports=[
            helper.make_opsetid("", 13), helper.make_opsetid(QONNX_DOMAIN, 1)])
        model.ir_version = min(model.ir_version, 8)
        return model


def graph_to_qonnx(graph: Graph, name: str = "shiftbook") -> Any:
    """The ONNX ``ModelProto`` (QONNX) of an integer IR graph."""
    return _Emitter(graph).run(name)


def save_qonnx(graph: Graph, path: str | Path, name: str = "shiftbook") -> Path:
    """Write :func:`graph_to_qonnx` of ``graph`` to ``path``."""
    import onnx

    onnx.save(graph_to_qonnx(graph, name), str(path))
    return Path(path)
