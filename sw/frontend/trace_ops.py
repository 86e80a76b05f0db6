"""The tracer's per-op handlers: one function per kind of aten op, ``handler(tracer, node)``
returning the value bound to the node (an :class:`Act`, a :class:`TupleValue` or a tensor), and
:data:`HANDLERS`, the dispatch table from aten op name to handler (see :mod:`.trace` for the
lowering rules)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .errors import FrontendError
from .float_net import FLayer
from .trace_nodes import Act, TupleValue, module_path, pair, where

if TYPE_CHECKING:
    from .trace import Tracer

__all__ = ["HANDLERS", "Handler"]

Handler = Callable[["Tracer", torch.fx.Node], Any]

_CONV = {"aten.conv2d.default", "aten.conv2d.padding", "aten.convolution.default"}
_BN = {"aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default",
       "aten._native_batch_norm_legit_functional.default", "aten.native_batch_norm.default",
       "aten._native_batch_norm_legit.default"}
_RELU = {"aten.relu.default", "aten.relu_.default"}
_ADD = {"aten.add.Tensor", "aten.add_.Tensor"}
_MAXPOOL = {"aten.max_pool2d.default", "aten.max_pool2d_with_indices.default"}
ADAPTIVE = {"aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default"}
_AVGPOOL = {"aten.avg_pool2d.default"}
MEAN = {"aten.mean.dim"}
FLATTEN = {"aten.flatten.using_ints"}
_VIEW = {"aten.view.default", "aten.reshape.default", "aten._unsafe_view.default"}
_SQUEEZE = {"aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze.default"}
_LINEAR = {"aten.linear.default"}
_ADDMM = {"aten.addmm.default", "aten.mm.default"}
_TRANSPOSE = {"aten.t.default", "aten.permute.default", "aten.transpose.int",
              "aten.numpy_T.default"}
_PASS = {"aten.clone.default", "aten.contiguous.default", "aten.alias.default",
         "aten.detach.default", "aten.detach_.default", "aten.lift_fresh_copy.default",
         "aten.identity.default", "aten.dropout.default", "aten.feature_dropout.default",
         "aten.dropout_.default"}


def conv(t: Tracer, node: torch.fx.Node) -> Act:
    a = t.args(node)
    tgt = str(node.target)
    x = t.act(a["input"], node)
    if x.flat:
        raise FrontendError(f"convolution of a flattened tensor at {where(node)}")
    w = t.param(a["weight"], node, "the weight")
    b = t.param(a.get("bias"), node, "the bias")
    if w.ndim != 4:
        raise FrontendError(f"{tgt}: only 2-D convolutions are supported (weight shape "
                            f"{tuple(w.shape)}) at {where(node)}")
    if tgt == "aten.convolution.default" and a["transposed"]:
        raise FrontendError(f"transposed convolution is not supported at {where(node)}")
    groups = int(a.get("groups") or 1)
    if groups != 1:
        raise FrontendError(f"grouped convolution (groups={groups}) is not supported at "
                            f"{where(node)}")
    dil = pair(a.get("dilation") or 1, "dilation", node)
    if dil != (1, 1):
        raise FrontendError(f"dilated convolution (dilation={list(dil)}) is not "
                            f"supported at {where(node)}")
    stride = pair(a.get("stride") or 1, "stride", node)
    kh, kw = int(w.shape[2]), int(w.shape[3])
    pad = a.get("padding", 0)
    if isinstance(pad, str):
        if pad == "valid":
            pad4 = (0, 0, 0, 0)
        else:  # "same" (stride 1)
            pad4 = ((kh - 1) // 2, (kw - 1) // 2, kh - 1 - (kh - 1) // 2,
                    kw - 1 - (kw - 1) // 2)
    else:
        ph, pw = pair(pad, "padding", node)
        pad4 = (ph, pw, ph, pw)
    shape = t.out_shape(node)
    out = (shape[1], shape[2], shape[3])
    name = t.layer_name(node, a["weight"])
    o = int(w.shape[0])
    wf = w.detach().cpu().to(torch.float64).numpy() * x.scale
    bf = (np.zeros(o) if b is None else b.detach().cpu().to(torch.float64).numpy())
    lay = FLayer("conv", name, x.tensor, name, out, where(node), weight=wf, bias=bf,
                 stride=stride, padding=pad4, kernel=(kh, kw),
                 fixed=t.fixed(name, w, o, x.scale, tuple(w.shape)),
                 module=module_path(node))
    return t.add_layer(lay)

def linear(t: Tracer, node: torch.fx.Node) -> Act:
    tgt = str(node.target)
    a = t.args(node)
    if tgt == "aten.linear.default":
        xin, wnode, bnode = a["input"], a["weight"], a.get("bias")
        w = t.param(wnode, node, "the weight")
    else:  # addmm(bias, mat1, mat2) / mm(self, mat2): mat2 is the transposed weight
        xin = a["mat1"] if "mat1" in a else a["self"]
        bnode = a.get("self") if "mat1" in a else None
        wnode = a["mat2"]
        w = t.param(wnode, node, "the weight").t()
        wsrc = wnode.args[0] if isinstance(wnode, torch.fx.Node) and wnode.args else wnode
        wnode = wsrc
    b = t.param(bnode, node, "the bias")
    x = t.act(xin, node)
    c, h, wd = x.shape
    if not x.flat and (h, wd) != (1, 1):
        raise FrontendError(f"linear layer on a ({c}, {h}, {wd}) tensor that is not "
                            f"flattened at {where(node)}")
    if not x.flat:
        raise FrontendError(f"linear layer on an unflattened tensor at {where(node)} "
                            f"(flatten to (N, C) first)")
    o = int(w.shape[0])
    if w.ndim != 2 or int(w.shape[1]) != c * h * wd:
        raise FrontendError(f"linear weight {tuple(w.shape)} does not fit an input of "
                            f"{c * h * wd} features at {where(node)}")
    shape4 = (o, c, h, wd)
    name = t.layer_name(node, wnode)
    wf = w.detach().cpu().to(torch.float64).numpy().reshape(shape4) * x.scale
    bf = np.zeros(o) if b is None else b.detach().cpu().to(torch.float64).numpy()
    kind = "linear" if (h, wd) == (1, 1) else "conv"
    lay = FLayer(kind, name, x.tensor, name, (o, 1, 1), where(node), weight=wf, bias=bf,
                 kernel=(h, wd), fixed=t.fixed(name, w.reshape(shape4), o, x.scale,
                                                  shape4),
                 module=module_path(node))
    act = t.add_layer(lay)
    act.flat = True
    return act

def batch_norm(t: Tracer, node: torch.fx.Node) -> Any:
    tgt = str(node.target)
    a = t.args(node)
    if a.get("training"):
        raise FrontendError(f"batch norm in training mode at {where(node)}; export the "
                            f"model in eval mode (model.eval())")
    lay = t.fusable(a["input"], node)
    if lay is None or lay.bn is not None or lay.residual is not None:
        raise FrontendError(f"{tgt} at {where(node)}: only a batch norm directly after a "
                            f"convolution or linear layer (whose output nothing else "
                            f"reads) can be folded")
    gamma = t.param(a.get("weight"), node, "the scale")
    beta = t.param(a.get("bias"), node, "the shift")
    mean = t.param(a["running_mean"], node, "the running mean")
    var = t.param(a["running_var"], node, "the running variance")
    eps = float(a["eps"])
    f64 = lambda v: v.detach().cpu().to(torch.float64).numpy()  # noqa: E731
    o = lay.weight.shape[0]
    s = (np.ones(o) if gamma is None else f64(gamma)) / np.sqrt(f64(var) + eps)
    lay.weight = lay.weight * s.reshape(-1, 1, 1, 1)
    lay.bias = (lay.bias - f64(mean)) * s + (np.zeros(o) if beta is None else f64(beta))
    if lay.fixed is not None:
        lay.fixed.factor = lay.fixed.factor * s
    lay.bn = module_path(node) or node.name
    act = t.val(a["input"])
    if tgt == "aten.batch_norm.default":
        return act
    return TupleValue([act, None, None])

def identity(t: Tracer, node: torch.fx.Node, x: Act, residual: Act | None) -> FLayer:
    c = x.shape[0]
    path = module_path(node)
    name = t.unique(f"{path}.{str(node.target).split('.')[1]}" if path else node.name)
    lay = FLayer("identity", name, x.tensor, name, x.shape, where(node),
                 weight=np.eye(c).reshape(c, c, 1, 1), bias=np.zeros(c),
                 residual=residual.tensor if residual else None, module=module_path(node))
    t.add_layer(lay)
    return lay

def relu(t: Tracer, node: torch.fx.Node) -> Act:
    a = t.args(node)
    first = next(iter(a.values()))
    x = t.act(first, node)
    if x.flat and x.shape[1:] != (1, 1):
        raise FrontendError(f"relu of a flattened tensor at {where(node)}")
    lay = t.fusable(first, node)
    if lay is not None:
        lay.relu = True
        return replace(x)
    if x.scale != 1.0:
        raise FrontendError(f"relu of an average pool's result at {where(node)}; its "
                            f"1/(H*W) can only be folded into a following convolution "
                            f"or linear layer")
    lay = identity(t, node, x, None)
    lay.relu = True
    return Act(lay.output, lay.out_shape, lay, flat=x.flat)

def add(t: Tracer, node: torch.fx.Node) -> Act:
    a = t.args(node)
    if a.get("alpha", 1) != 1:
        raise FrontendError(f"add with alpha={a['alpha']} is not supported at "
                            f"{where(node)}")
    na, nb = a["self"], a["other"]
    xa, xb = t.val(na), t.val(nb)
    if not isinstance(xa, Act) or not isinstance(xb, Act):
        raise FrontendError(f"add of a constant is not supported at {where(node)} (only "
                            f"residual adds of two activation tensors)")
    if xa.shape != xb.shape or xa.flat != xb.flat:
        raise FrontendError(f"add of tensors shaped {xa.shape} and {xb.shape} at "
                            f"{where(node)} (broadcasting is not supported)")
    if xa.scale != 1.0 or xb.scale != 1.0:
        raise FrontendError(f"add of an average pool's result at {where(node)}")
    cands = []
    if na is not nb:
        for n, x, other in ((na, xa, xb), (nb, xb, xa)):
            lay = t.fusable(n, node)
            if lay is not None and lay.residual is None:
                cands.append((t.layers.index(lay), lay, x, other))
    if cands:
        _, lay, x, other = max(cands, key=lambda c: c[0])
        # The main layer's output is read only by this add, so it can run last.
        t.layers.remove(lay)
        t.layers.append(lay)
        lay.residual = other.tensor
        return replace(x)
    lay = identity(t, node, xa, xb)
    return Act(lay.output, lay.out_shape, lay, flat=xa.flat)

def maxpool(t: Tracer, node: torch.fx.Node) -> Any:
    a = t.args(node)
    x = t.act(a["self"], node)
    if x.flat:
        raise FrontendError(f"max pool of a flattened tensor at {where(node)}")
    k = pair(a["kernel_size"], "kernel", node)
    s = pair(a.get("stride") or k, "stride", node)
    p = pair(a.get("padding") or 0, "padding", node)
    d = pair(a.get("dilation") or 1, "dilation", node)
    if d != (1, 1):
        raise FrontendError(f"dilated max pool is not supported at {where(node)}")
    shape = t.out_shape(node)
    out = (shape[1], shape[2], shape[3])
    pad4 = (p[0], p[1], p[0], p[1])
    floor = ((x.shape[1] + 2 * p[0] - k[0]) // s[0] + 1,
             (x.shape[2] + 2 * p[1] - k[1]) // s[1] + 1)
    if out[1:] != floor:
        raise FrontendError(f"max pool with ceil_mode=True changes the output size at "
                            f"{where(node)}; only floor mode is supported")
    name = t.unique(module_path(node) or node.name)
    lay = FLayer("maxpool", name, x.tensor, name, out, where(node), kernel=k, stride=s,
                 padding=pad4, module=module_path(node))
    act = t.add_layer(lay)
    act.scale = x.scale
    if str(node.target) == "aten.max_pool2d_with_indices.default":
        return TupleValue([act, None])
    return act

def avgpool(t: Tracer, node: torch.fx.Node) -> Act:
    tgt = str(node.target)
    a = t.args(node)
    x = t.act(a["self"], node)
    if x.flat:
        raise FrontendError(f"average pool of a flattened tensor at {where(node)}")
    c, h, w = x.shape
    pad4 = (0, 0, 0, 0)
    flat = False
    if tgt in ADAPTIVE:
        oh, ow = pair(a["output_size"], "output size", node)
        if h % oh or w % ow:
            raise FrontendError(f"adaptive average pool from {h}x{w} to {oh}x{ow} (not a "
                                f"whole-number window) is not supported at {where(node)}")
        k = (h // oh, w // ow)
        s = k
    elif tgt in MEAN:
        dims = sorted(int(d) % 4 for d in (a["dim"] or []))
        if dims != [2, 3]:
            raise FrontendError(f"mean over dims {a['dim']} is not supported at "
                                f"{where(node)} (only over H and W: global average pool)")
        k, s = (h, w), (1, 1)
        flat = not a.get("keepdim")
    else:
        k = pair(a["kernel_size"], "kernel", node)
        s = pair(a.get("stride") or k, "stride", node)
        p = pair(a.get("padding") or 0, "padding", node)
        if a.get("divisor_override") is not None:
            raise FrontendError(f"avg_pool2d with divisor_override is not supported at "
                                f"{where(node)}")
        if p != (0, 0) and not a.get("count_include_pad", True):
            raise FrontendError(f"avg_pool2d with padding and count_include_pad=False is "
                                f"not supported at {where(node)}")
        pad4 = (p[0], p[1], p[0], p[1])
    shape = t.out_shape(node)
    out = (c, (h + pad4[0] + pad4[2] - k[0]) // s[0] + 1,
           (w + pad4[1] + pad4[3] - k[1]) // s[1] + 1)
    got = shape[1:] if len(shape) == 4 else (shape[1], 1, 1)
    if tuple(got) != out:
        raise FrontendError(f"average pool output {tuple(shape)} does not match a "
                            f"floor-mode window at {where(node)}")
    if k == (1, 1) and s == (1, 1) and pad4 == (0, 0, 0, 0):
        return replace(x, flat=flat)
    name = t.unique(module_path(node) or node.name)
    lay = FLayer("sumpool", name, x.tensor, name, out, where(node), kernel=k, stride=s,
                 padding=pad4, module=module_path(node))
    act = t.add_layer(lay)
    act.scale = x.scale / (k[0] * k[1])
    act.flat = flat
    return act

def flatten(t: Tracer, node: torch.fx.Node) -> Act:
    tgt = str(node.target)
    a = t.args(node)
    x = t.act(node.args[0], node)
    c, h, w = x.shape
    shape = t.out_shape(node)
    if tgt in FLATTEN:
        start, end = int(a["start_dim"]), int(a["end_dim"])
        ok = start == 1 and end % 4 == 3
    else:
        ok = len(shape) == 2 and shape[1] == c * h * w
    if len(shape) == 4 and tuple(shape[1:]) == x.shape and not x.flat:
        return x
    if x.flat and len(shape) == 2 and shape[1] == c * h * w:
        return x
    if not ok or len(shape) != 2:
        raise FrontendError(f"{tgt} to shape {list(shape)} is not supported at "
                            f"{where(node)} (only flattening (N, C, H, W) to "
                            f"(N, C*H*W))")
    return replace(x, flat=True)


def transpose(t: Tracer, node: torch.fx.Node) -> torch.Tensor:
    """A transposed parameter (the weight of an ``mm``/``addmm`` linear layer)."""
    tgt = str(node.target)
    a = t.args(node)
    first = next(iter(a.values()))
    w = t.param(first, node, "the transposed tensor")
    if tgt == "aten.permute.default":
        return w.permute(*a["dims"])
    if tgt == "aten.transpose.int":
        return w.transpose(a["dim0"], a["dim1"])
    return w.t()


def passthrough(t: Tracer, node: torch.fx.Node) -> Any:
    """Ops that change nothing at inference (clone, dropout in eval mode, ...)."""
    a = t.args(node)
    if "train" in a and a["train"]:
        raise FrontendError(f"{node.target} in training mode at {where(node)}; export the "
                            f"model in eval mode")
    return t.val(node.args[0])


def _table(*groups: tuple[set[str], Handler]) -> dict[str, Handler]:
    return {name: fn for names, fn in groups for name in names}


#: aten op name -> handler.
HANDLERS: dict[str, Handler] = _table(
    (_CONV, conv), (_BN, batch_norm), (_RELU, relu), (_ADD, add), (_MAXPOOL, maxpool),
    (ADAPTIVE | _AVGPOOL | MEAN, avgpool), (FLATTEN | _VIEW | _SQUEEZE, flatten),
    (_LINEAR | _ADDMM, linear), (_TRANSPOSE, transpose), (_PASS, passthrough),
)
