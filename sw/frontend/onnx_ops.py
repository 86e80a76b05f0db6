"""Per-op handlers of the ONNX walker (:mod:`.onnx_import`): each reads ``self.node`` and
returns the value of its output (an :class:`~.trace_nodes.Act`) or None; methods of
``_Walker``, kept here so that neither file grows past a screenful of ops.

Rules follow the ``torch.export`` tracer's (:mod:`.trace`): a BatchNormalization, ReLU or
residual Add folds into the layer that produced its input when nothing else reads that output;
otherwise a ReLU or Add becomes an identity 1x1 convolution. Average pools become sum pools
with a pending ``1/(KH*KW)`` that the next layer's weights absorb.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftbook.sw.ir import pool_out_hw

from .float_net import WEIGHTED, FLayer
from .onnx_quant import act_quant, fixed_weights
from .trace_nodes import Act

__all__ = ["op_Add", "op_AveragePool", "op_BatchNormalization", "op_Conv", "op_Flatten",
           "op_Gemm", "op_GlobalAveragePool", "op_MatMul", "op_MaxPool", "op_Mul", "op_pass",
           "op_Quant", "op_ReduceMean", "op_Relu", "op_Reshape", "op_Trunc"]


def _weighted(self: Any, src: Act, w: np.ndarray, b: np.ndarray | None, kind: str,
              shape: tuple[int, int, int], **kw: Any) -> Act:
    """Add a conv/linear layer with float64 weights ``w`` ``(O, I, KH, KW)``: the pending
    input scale is folded in and kept shift codes are looked up."""
    o = w.shape[0]
    factor = np.full(o, float(src.scale))
    wq = self.wq.get(self.node.input[1])
    fx = fixed_weights(w, wq, self.exp_bits, factor)
    w = w * src.scale
    bias = np.zeros(o) if b is None else np.asarray(b, np.float64).reshape(o)
    lay = self.new_layer(kind, src, shape, weight=w, bias=bias, fixed=fx, **kw)
    if fx is None and wq is not None:
        self.converted.append(lay.name)
        self.notes.append(f"layer {lay.name}: weight {wq.describe()} is not powers of two "
                          f"times a power-of-two scale; converted post-training")
    return self.add_layer(lay)


def op_Conv(self: Any) -> Act:
    src = self.act(0)
    if src.flat:
        raise self.fail("a convolution of a flattened tensor")
    w = self.const(1, "weight")
    if w is None or w.ndim != 4:
        raise self.fail("only 2-D convolutions (a 4-D weight) are supported")
    group = int(self.attr("group", 1))
    if group != 1:
        raise self.fail(f"a grouped convolution (group={group}); the core runs dense ones")
    if any(int(d) != 1 for d in self.attr("dilations", [1, 1])):
        raise self.fail("a dilated convolution")
    if self.attr("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise self.fail("auto_pad SAME (give explicit pads)")
    kh, kw = int(w.shape[2]), int(w.shape[3])
    sy, sx = (int(s) for s in self.attr("strides", [1, 1]))
    t, left, bot, r = (int(p) for p in self.attr("pads", [0, 0, 0, 0]))
    if w.shape[1] != src.shape[0]:
        raise self.fail(f"weight of {w.shape[1]} input channels for a {src.shape[0]}-channel "
                        f"input")
    oh, ow = pool_out_hw(src.shape[1:], (kh, kw), (sy, sx), (t, left, bot, r))
    return _weighted(self, src, np.asarray(w, np.float64), self.const(2, "bias"), "conv",
                     (int(w.shape[0]), oh, ow), stride=(sy, sx), padding=(t, left, bot, r))


def _dense(self: Any, w_io: np.ndarray, b: np.ndarray | None) -> Act:
    """A fully connected layer on a flattened input: ``w_io`` is ``(O, I)``."""
    src = self.act(0)
    c, h, wd = src.shape
    if not src.flat and (h, wd) != (1, 1):
        raise self.fail(f"a fully connected layer on an unflattened {src.shape} tensor")
    if w_io.shape[1] != c * h * wd:
        raise self.fail(f"weight of {w_io.shape[1]} inputs for a {c}x{h}x{wd} input")
    w = np.asarray(w_io, np.float64).reshape(w_io.shape[0], c, h, wd)
    kind = "linear" if (h, wd) == (1, 1) else "conv"
    return _weighted(self, src, w, b, kind, (int(w.shape[0]), 1, 1), kernel=(h, wd))


def op_Gemm(self: Any) -> Act:
    if int(self.attr("transA", 0)):
        raise self.fail("transA=1 (the activation must be the first, untransposed operand)")
    w = self.const(1, "weight")
    if w is None or w.ndim != 2:
        raise self.fail("a Gemm whose second operand is not a 2-D constant")
    if not int(self.attr("transB", 0)):
        w = w.T
    alpha, beta = float(self.attr("alpha", 1.0)), float(self.attr("beta", 1.0))
    b = self.const(2, "bias")
    if alpha != 1.0:
        w = w * alpha
        self.wq.pop(self.node.input[1], None)
    if b is not None:
        b = np.broadcast_to(np.asarray(b, np.float64).ravel() * beta, (w.shape[0],))
    return _dense(self, w, b)


def op_MatMul(self: Any) -> Act:
    w = self.const(1, "weight")
    if w is None or w.ndim != 2:
        raise self.fail("a MatMul whose second operand is not a 2-D constant")
    return _dense(self, w.T, None)


def op_BatchNormalization(self: Any) -> Act:
    lay = self.fusable(self.node.input[0])
    if lay is None:
        raise self.fail("a batch norm not directly after a convolution or linear layer "
                        "(nothing to fold it into)")
    g, beta, mean, var = (np.asarray(self.const(i, "batch-norm parameter"), np.float64)
                          for i in range(1, 5))
    s = g / np.sqrt(var + float(self.attr("epsilon", 1e-5)))
    lay.weight = lay.weight * s.reshape(-1, 1, 1, 1)
    lay.bias = (lay.bias - mean) * s + beta
    if lay.fixed is not None:
        lay.fixed.factor = lay.fixed.factor * s
    lay.bn = self.node.name or "batchnorm"
    return self.rename(lay, self.node.output[0])


def op_Relu(self: Any) -> Act:
    lay = self.fusable(self.node.input[0])
    if lay is not None:
        lay.relu = True
        return self.rename(lay, self.node.output[0])
    return _identity(self, self.act(0), None, relu=True)


def _identity(self: Any, src: Act, res: Act | None, relu: bool) -> Act:
    """A 1x1 identity convolution (a ReLU or residual add with no layer to fold into)."""
    if src.flat or src.scale != 1.0 or (res is not None and (res.flat or res.scale != 1.0)):
        raise self.fail("a ReLU or Add of a flattened or average-pooled tensor")
    c = src.shape[0]
    w = np.eye(c).reshape(c, c, 1, 1)
    lay = self.new_layer("identity", src, src.shape, weight=w, bias=np.zeros(c), relu=relu,
                         residual=None if res is None else res.tensor)
    return self.add_layer(lay)


def op_Add(self: Any) -> Act:
    a_name, b_name = self.node.input[0], self.node.input[1]
    if a_name in self.consts or b_name in self.consts:      # a bias added after a MatMul
        x_name, c = (b_name, self.consts[a_name]) if a_name in self.consts else \
            (a_name, self.consts[b_name])
        lay = self.fusable(x_name)
        if lay is None:
            raise self.fail("adding a constant to a tensor no layer's bias can absorb")
        lay.bias = lay.bias + np.broadcast_to(np.asarray(c, np.float64).ravel(),
                                              lay.bias.shape)
        return self.rename(lay, self.node.output[0])
    a, b = self.act(0), self.act(1)
    if a.shape != b.shape:
        raise self.fail(f"adding tensors of shapes {a.shape} and {b.shape}")
    cands = [(self.layers.index(lay), name, lay) for name in (a_name, b_name)
             if (lay := self.fusable(name)) is not None and lay.residual is None]
    if not cands:
        return _identity(self, a, b, relu=False)
    _, name, lay = max(cands, key=lambda t: t[0])
    other = b if name == a_name else a
    if other.flat or other.scale != 1.0:
        raise self.fail("a residual add of a flattened or average-pooled tensor")
    lay.residual = other.tensor
    return self.rename(lay, self.node.output[0])


def _pool_args(self: Any, src: Act) -> tuple[tuple[int, int], tuple[int, int],
                                             tuple[int, int, int, int]]:
    if src.flat:
        raise self.fail("a pool of a flattened tensor")
    if int(self.attr("ceil_mode", 0)):
        raise self.fail("ceil_mode=1")
    if any(int(d) != 1 for d in self.attr("dilations", [1, 1])):
        raise self.fail("a dilated pool")
    kh, kw = (int(k) for k in self.attr("kernel_shape"))
    sy, sx = (int(s) for s in self.attr("strides", [1, 1]))
    t, left, bot, r = (int(p) for p in self.attr("pads", [0, 0, 0, 0]))
    return (kh, kw), (sy, sx), (t, left, bot, r)


def _pool(self: Any, kind: str, src: Act, k: tuple[int, int], s: tuple[int, int],
          p: tuple[int, int, int, int]) -> FLayer:
    oh, ow = pool_out_hw(src.shape[1:], k, s, p)
    return self.new_layer(kind, src, (src.shape[0], oh, ow), kernel=k, stride=s, padding=p)


def op_MaxPool(self: Any) -> Act:
    src = self.act(0)
    if len(self.node.output) > 1 and self.node.output[1]:
        raise self.fail("MaxPool indices output")
    lay = _pool(self, "maxpool", src, *_pool_args(self, src))
    a = self.add_layer(lay)
    return Act(a.tensor, a.shape, lay, src.scale)      # max commutes with a positive scale


def op_AveragePool(self: Any) -> Act:
    src = self.act(0)
    k, s, p = _pool_args(self, src)
    if any(p) and not int(self.attr("count_include_pad", 0)):
        raise self.fail("a padded average pool that excludes padding from its count")
    lay = _pool(self, "sumpool", src, k, s, p)
    a = self.add_layer(lay)
    return Act(a.tensor, a.shape, lay, src.scale / (k[0] * k[1]))


def op_GlobalAveragePool(self: Any) -> Act:
    src = self.act(0)
    if src.flat:
        raise self.fail("a pool of a flattened tensor")
    k = (src.shape[1], src.shape[2])
    lay = _pool(self, "sumpool", src, k, k, (0, 0, 0, 0))
    a = self.add_layer(lay)
    return Act(a.tensor, a.shape, lay, src.scale / (k[0] * k[1]))


def op_Mul(self: Any) -> Act:
    names = self.node.input
    if names[1] in self.consts or names[0] in self.consts:
        x, c = (names[0], self.consts[names[1]]) if names[1] in self.consts else \
            (names[1], self.consts[names[0]])
        c = np.asarray(c, np.float64)
        if c.size == 1 and float(c.ravel()[0]) > 0 and x in self.env:
            a = self.env[x]
            return Act(a.tensor, a.shape, a.layer, a.scale * float(c.ravel()[0]), a.flat)
    raise self.fail("only a multiplication by a positive scalar constant is supported")


def op_Flatten(self: Any) -> Act:
    a = self.act(0)
    if int(self.attr("axis", 1)) != 1:
        raise self.fail("Flatten with axis != 1")
    return Act(a.tensor, a.shape, a.layer, a.scale, True)


def op_Reshape(self: Any) -> Act:
    a = self.act(0)
    shape = self.model.get_tensor_shape(self.node.output[0])
    c, h, w = a.shape
    if shape is None or len(shape) != 2 or int(shape[1]) != c * h * w:
        raise self.fail(f"a reshape to {shape} (only (N, C*H*W) flattening is supported)")
    return Act(a.tensor, a.shape, a.layer, a.scale, True)


def op_pass(self: Any) -> Act:
    return self.act(0)


def op_Quant(self: Any) -> Act:
    """An activation quantizer: fixes the scale of the tensor it reads when the core can
    honour it (a note says what it does not), and ends the producing layer there."""
    a = self.act(0)
    nonneg = a.layer is not None and a.layer.relu and a.layer.output == a.tensor \
        or a.layer is not None and a.layer.kind == "maxpool" and _relu_before(self, a)
    q = act_quant(self.node, self.consts, self.where(), bool(nonneg))
    if q.why:
        self.notes.append(f"{self.node.op_type} '{self.node.name or self.node.output[0]}': "
                          f"{q.why}" + ("; its scale is calibrated instead" if q.frac is None
                                        else ""))
    if a.scale != 1.0 or a.flat:
        return a
    lay = a.layer
    if lay is not None and lay.kind in (*WEIGHTED, "sumpool") \
            and self.users.get(self.node.input[0]) == 1 \
            and lay.output == a.tensor:
        a = self.rename(lay, self.node.output[0])
    if q.frac is not None:
        prev = self.fracs.get(a.tensor)
        if prev is not None and prev != q.frac:
            self.notes.append(f"tensor {a.tensor}: two quantizers give scales 2^-{prev} and "
                              f"2^-{q.frac}; the first is kept")
        else:
            self.fracs[a.tensor] = q.frac
    return a


op_Trunc = op_Quant


def _relu_before(self: Any, a: Act) -> bool:
    """Whether a max pool's input comes from a ReLU (its output is then non-negative)."""
    for lay in self.layers:
        if lay.output == a.layer.input:
            return bool(lay.relu)
    return False


def op_ReduceMean(self: Any) -> Act:
    """``mean`` over H and W: a global average pool (flat when ``keepdims=0``)."""
    axes = self.attr("axes")
    if axes is None and len(self.node.input) > 1:
        axes = self.const(1, "axes")
    axes = sorted(int(a) % 4 for a in np.asarray(axes if axes is not None else [], np.int64)
                  .ravel())
    if axes != [2, 3]:
        raise self.fail(f"a mean over axes {axes} (only over H and W, a global average pool)")
    a = op_GlobalAveragePool(self)
    return Act(a.tensor, a.shape, a.layer, a.scale, not int(self.attr("keepdims", 1)))
