"""Walk a ``torch.export`` graph (aten ops) into a :class:`FloatNet`: the network as the
accelerator will run it, still in float64.

What happens here (no quantization yet):

- ``conv2d``/``convolution`` and ``linear``/``addmm`` become layers; a linear layer reading a
  flattened ``(C, H, W)`` tensor becomes a convolution whose kernel covers the input.
- ``batch_norm`` (eval) directly after a convolution or linear layer is folded into its weights
  and bias: ``w' = w * g/sqrt(var+eps)``, ``b' = (b - mean) * g/sqrt(var+eps) + beta``.
- ``relu`` is fused into the layer producing its input (if nothing else reads that output).
- ``add`` of two tensors becomes a residual input of the convolution producing one operand
  (the one computed last, if nothing else reads it); otherwise an identity 1x1 convolution
  with a residual input.
- ``max_pool2d`` becomes a max pool; average pools (``adaptive_avg_pool2d``, ``avg_pool2d``,
  ``mean`` over H and W) become sum pools whose ``1/(KH*KW)`` is carried as a pending scale and
  folded into the next convolution or linear layer's weights.
- ``flatten``/``view``/``reshape`` to ``(N, C*H*W)``, ``dropout`` (eval), ``clone`` and the like
  change nothing.

Anything else raises :class:`FrontendError` naming the op, the node and the module path.
"""

from __future__ import annotations

import operator
import re
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from shiftbook import numerics as nx

from .errors import FrontendError

__all__ = ["FixedWeights", "FLayer", "FloatNet", "trace_program", "detect_shift"]

_WEIGHTED = ("conv", "linear", "identity")

_CONV = {"aten.conv2d.default", "aten.conv2d.padding", "aten.convolution.default"}
_BN = {"aten.batch_norm.default", "aten._native_batch_norm_legit_no_training.default",
       "aten._native_batch_norm_legit_functional.default", "aten.native_batch_norm.default",
       "aten._native_batch_norm_legit.default"}
_RELU = {"aten.relu.default", "aten.relu_.default"}
_ADD = {"aten.add.Tensor", "aten.add_.Tensor"}
_MAXPOOL = {"aten.max_pool2d.default", "aten.max_pool2d_with_indices.default"}
_ADAPTIVE = {"aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool2d.default"}
_AVGPOOL = {"aten.avg_pool2d.default"}
_MEAN = {"aten.mean.dim"}
_FLATTEN = {"aten.flatten.using_ints"}
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


# ---------------------------------------------------------------- float network
@dataclass
class FixedWeights:
    """A layer whose shift codes are given (a ``shiftbook compress`` format, or weights that
    are already exact powers of two) and must be kept.

    Members
    -------
    codes: int64 ``(O, I, KH, KW)`` shift codes with ``exp_bits``.
    w_frac: int64 ``(O,)`` the format's scale (real weight = value * 2**-w_frac).
    factor: float64 ``(O,)`` per-output-channel factors folded in since (batch-norm scale,
        average-pool ``1/(H*W)``): the layer's float weight is ``real(codes) * factor``.
    fmt: the compressed format record (``None`` for detected power-of-two weights).
    """

    codes: np.ndarray
    exp_bits: int
    w_frac: np.ndarray
    factor: np.ndarray
    fmt: Any = None

    def real(self) -> np.ndarray:
        v = np.asarray(nx.decode_shift(self.codes, self.exp_bits), dtype=np.float64)
        return v * np.exp2(-self.w_frac.astype(np.float64)).reshape(-1, 1, 1, 1) \
            * self.factor.reshape(-1, 1, 1, 1)


@dataclass
class FLayer:
    """One layer of a :class:`FloatNet`.

    ``kind``: ``conv`` (also a linear layer on a flattened ``(C, H, W)`` input), ``linear``
    (input ``(C, 1, 1)``), ``identity`` (a 1x1 identity convolution: a standalone ReLU or
    residual add), ``maxpool``, ``sumpool``. ``weight`` is float64 ``(O, I, KH, KW)`` with
    everything folded in; ``bias`` ``(O,)``. ``where`` names the node and module (errors).
    """

    kind: str
    name: str
    input: str
    output: str
    out_shape: tuple[int, int, int]
    where: str
    weight: np.ndarray | None = None
    bias: np.ndarray | None = None
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int, int, int] = (0, 0, 0, 0)
    kernel: tuple[int, int] = (1, 1)
    relu: bool = False
    residual: str | None = None
    fixed: FixedWeights | None = None
    bn: str | None = None
    module: str = ""


@dataclass
class FloatNet:
    """The lowered network in float64: input tensor, layers in execution order, outputs."""

    input: str
    input_shape: tuple[int, int, int]
    layers: list[FLayer] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    shapes: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def layer(self, name: str) -> FLayer:
        for lay in self.layers:
            if lay.name == name:
                return lay
        raise KeyError(name)

    @torch.no_grad()
    def run(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every tensor (float64, ``(N, C, H, W)``) for a float batch ``x``."""
        env = {self.input: torch.as_tensor(x).to(torch.float64)}
        for lay in self.layers:
            a = env[lay.input]
            t, left, b, r = lay.padding
            if lay.kind in _WEIGHTED:
                w = torch.from_numpy(lay.weight)
                y = F.conv2d(F.pad(a, (left, r, t, b)), w, torch.from_numpy(lay.bias),
                             stride=lay.stride)
                if lay.residual is not None:
                    y = y + env[lay.residual]
                if lay.relu:
                    y = torch.relu(y)
            elif lay.kind == "maxpool":
                y = F.max_pool2d(F.pad(a, (left, r, t, b), value=-float("inf")), lay.kernel,
                                 lay.stride)
            elif lay.kind == "sumpool":
                kh, kw = lay.kernel
                y = F.avg_pool2d(F.pad(a, (left, r, t, b)), lay.kernel, lay.stride) * (kh * kw)
            else:  # pragma: no cover - trace only makes the kinds above
                raise FrontendError(f"unknown layer kind {lay.kind!r}")
            env[lay.output] = y
        return env

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x)[self.outputs[0]].flatten(1)


# ---------------------------------------------------------------- helpers
def detect_shift(w: np.ndarray, exp_bits: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Codes and per-output-channel ``w_frac`` if every weight is 0 or ``±2**k`` and each
    channel's exponents span at most ``2**exp_bits - 1``; else ``None``."""
    emax = (1 << exp_bits) - 1
    a = np.asarray(w, dtype=np.float64)
    flat = a.reshape(a.shape[0], -1)
    wf = np.zeros(a.shape[0], np.int64)
    for c in range(flat.shape[0]):
        nz = flat[c][flat[c] != 0]
        if nz.size == 0:
            continue
        mant, ex = np.frexp(np.abs(nz))
        if not np.all(mant == 0.5) or not np.all(np.isfinite(nz)):
            return None
        ex = ex - 1
        if int(ex.max() - ex.min()) > emax:
            return None
        wf[c] = emax - int(ex.max())
    codes, _ = nx.float_to_shift(a, exp_bits, w_frac=wf.reshape((-1,) + (1,) * (a.ndim - 1)))
    back = nx.decode_shift(codes, exp_bits) * np.exp2(-wf.astype(np.float64)).reshape(
        (-1,) + (1,) * (a.ndim - 1))
    if not np.array_equal(back, a):
        return None
    return np.asarray(codes, dtype=np.int64), wf


def _where(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, typ = list(stack.values())[-1]
        typ = str(getattr(typ, "__name__", typ)).rsplit(".", 1)[-1].strip("'>")
        mod = f"module '{path}' ({typ})" if path else f"the top-level module ({typ})"
    else:
        mod = "the model"
    where = f"node '{node.name}' in {mod}"
    trace = node.meta.get("stack_trace") or ""
    frames = [f for f in re.findall(r'File "([^"]+)", line (\d+)', trace)
              if "/torch/" not in f[0]]
    if frames:
        file, line = frames[-1]
        where += f" at {file.rsplit('/', 1)[-1]}:{line}"
    return where


def _module_path(node: torch.fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _pair(v: Any, what: str, node: torch.fx.Node) -> tuple[int, int]:
    if isinstance(v, int):
        return v, v
    v = list(v)
    if len(v) == 1:
        return int(v[0]), int(v[0])
    if len(v) == 2:
        return int(v[0]), int(v[1])
    raise FrontendError(f"{node.target}: {what} {v} is not 2-D at {_where(node)}")


@dataclass
class _Act:
    """An activation value: the IR tensor holding it, its ``(C, H, W)``, its producer layer,
    a pending scale (real = scale * tensor, from an average pool) and whether it is flat."""

    tensor: str
    shape: tuple[int, int, int]
    layer: FLayer | None
    scale: float = 1.0
    flat: bool = False


@dataclass
class _Tuple:
    items: list[Any]


class _Tracer:
    def __init__(self, ep: torch.export.ExportedProgram, formats: dict[str, Any], exp_bits: int,
                 detect: bool) -> None:
        self.ep = ep
        self.formats = formats
        self.exp_bits = exp_bits
        self.detect = detect
        self.env: dict[str, Any] = {}
        self.param_name: dict[str, str] = {}
        self.layers: list[FLayer] = []
        self.names: set[str] = set()
        self.net: FloatNet | None = None

    # ---- bookkeeping
    def unique(self, base: str) -> str:
        base = base or "layer"
        name, i = base, 1
        while name in self.names:
            name = f"{base}_{i}"
            i += 1
        self.names.add(name)
        return name

    def val(self, a: Any) -> Any:
        if isinstance(a, torch.fx.Node):
            return self.env[a.name]
        if isinstance(a, list | tuple):
            return type(a)(self.val(x) for x in a)
        return a

    def args(self, node: torch.fx.Node) -> dict[str, Any]:
        schema = getattr(node.target, "_schema", None)
        if schema is None:
            return {f"a{i}": v for i, v in enumerate(node.args)}
        out: dict[str, Any] = {}
        for i, a in enumerate(schema.arguments):
            if i < len(node.args):
                out[a.name] = node.args[i]
            elif a.name in node.kwargs:
                out[a.name] = node.kwargs[a.name]
            elif a.has_default_value():
                out[a.name] = a.default_value
            else:
                out[a.name] = None
        return out

    def act(self, a: Any, node: torch.fx.Node, what: str = "input") -> _Act:
        v = self.val(a)
        if not isinstance(v, _Act):
            raise FrontendError(f"{node.target}: its {what} is not an activation tensor (a "
                                f"constant or parameter) at {_where(node)}")
        return v

    def param(self, a: Any, node: torch.fx.Node, what: str) -> torch.Tensor | None:
        if a is None:
            return None
        v = self.val(a)
        if not isinstance(v, torch.Tensor):
            raise FrontendError(f"{node.target}: {what} must be a parameter or constant, not "
                                f"a computed tensor, at {_where(node)}")
        return v

    def out_shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        v = node.meta.get("val")
        if isinstance(v, list | tuple) and v:
            v = v[0]
        if v is None or not hasattr(v, "shape"):
            raise FrontendError(f"{node.target}: no shape recorded at {_where(node)} (export "
                                f"the model with torch.export)")
        return tuple(int(s) for s in v.shape)

    def fusable(self, a: Any, node: torch.fx.Node) -> FLayer | None:
        """The weighted layer producing ``a`` if ``node`` is the only reader and it has no
        ReLU yet (so the op at ``node`` may be folded into it)."""
        if not isinstance(a, torch.fx.Node):
            return None
        v = self.env.get(a.name)
        if not isinstance(v, _Act) or v.layer is None or v.layer.kind not in _WEIGHTED:
            return None
        if len(a.users) != 1 or v.layer.relu or v.scale != 1.0 or v.flat:
            return None
        if v.layer.output != v.tensor:
            return None
        return v.layer

    # ---- walk
    def run(self) -> FloatNet:
        sig = self.ep.graph_signature
        kinds = {}
        for spec in sig.input_specs:
            kinds[spec.arg.name] = spec
        user_inputs = []
        for node in self.ep.graph.nodes:
            if node.op == "placeholder":
                spec = kinds.get(node.name)
                kind = getattr(spec.kind, "name", str(spec.kind)) if spec else "USER_INPUT"
                if kind == "USER_INPUT":
                    user_inputs.append(node)
                    continue
                if kind in ("PARAMETER", "BUFFER"):
                    t = self.ep.state_dict.get(spec.target)
                    if t is None:
                        t = self.ep.constants.get(spec.target)
                elif kind in ("CONSTANT_TENSOR", "CUSTOM_OBJ"):
                    t = self.ep.constants.get(spec.target)
                else:
                    t = None
                if kind not in ("TOKEN",) and not isinstance(t, torch.Tensor):
                    raise FrontendError(f"input {node.name!r} of kind {kind} is not a tensor "
                                        f"the frontend can read")
                self.env[node.name] = t
                if spec.target:
                    self.param_name[node.name] = str(spec.target)
                continue
            if node.op == "get_attr":
                t = self.ep.graph_module
                for part in str(node.target).split("."):
                    t = getattr(t, part)
                self.env[node.name] = t
                self.param_name[node.name] = str(node.target)
                continue
            if node.op == "output":
                self.finish(node, user_inputs)
                continue
            if node.op != "call_function":
                raise FrontendError(f"unsupported graph node kind {node.op!r} at {_where(node)}")
            if not user_inputs:
                raise FrontendError("the exported model has no tensor input")
            if len(user_inputs) > 1:
                raise FrontendError(f"the model takes {len(user_inputs)} inputs; the frontend "
                                    f"lowers models with one image input")
            if self.net is None:
                self.start(user_inputs[0])
            self.env[node.name] = self.call(node)
        assert self.net is not None
        return self.net

    def start(self, node: torch.fx.Node) -> None:
        shape = self.out_shape(node)
        if len(shape) != 4:
            raise FrontendError(f"model input {node.name!r} has shape {shape}; expected an "
                                f"image batch (N, C, H, W)")
        chw = (shape[1], shape[2], shape[3])
        name = self.unique(node.name)
        self.net = FloatNet(input=name, input_shape=chw, shapes={name: chw})
        self.env[node.name] = _Act(name, chw, None)

    def finish(self, node: torch.fx.Node, user_inputs: list[torch.fx.Node]) -> None:
        if self.net is None:
            if len(user_inputs) != 1:
                raise FrontendError("the model must take exactly one image input")
            self.start(user_inputs[0])
        assert self.net is not None
        outs = node.args[0]
        outs = list(outs) if isinstance(outs, list | tuple) else [outs]
        for o in outs:
            v = self.val(o)
            if not isinstance(v, _Act):
                raise FrontendError("a model output is not an activation tensor")
            if v.scale != 1.0:
                raise FrontendError(f"model output {o.name!r} is an average pool's result; its "
                                    f"1/(H*W) can only be folded into a following convolution "
                                    f"or linear layer")
            self.net.outputs.append(v.tensor)
        self.net.layers = self.layers

    def add_layer(self, lay: FLayer) -> _Act:
        assert self.net is not None
        self.layers.append(lay)
        self.net.shapes[lay.output] = lay.out_shape
        return _Act(lay.output, lay.out_shape, lay)

    def call(self, node: torch.fx.Node) -> Any:
        tgt = str(node.target)
        if node.target is operator.getitem:
            seq, idx = self.val(node.args[0]), node.args[1]
            if isinstance(seq, _Tuple):
                item = seq.items[idx]
                if item is None and len(node.users):
                    raise FrontendError(f"output {idx} of a tuple op is not supported at "
                                        f"{_where(node)}")
                return item
            raise FrontendError(f"indexing is not supported at {_where(node)}")
        if tgt in _CONV:
            return self.conv(node)
        if tgt in _BN:
            return self.batch_norm(node)
        if tgt in _RELU:
            return self.relu(node)
        if tgt in _ADD:
            return self.add(node)
        if tgt in _MAXPOOL:
            return self.maxpool(node)
        if tgt in _ADAPTIVE | _AVGPOOL | _MEAN:
            return self.avgpool(node)
        if tgt in _FLATTEN | _VIEW | _SQUEEZE:
            return self.flatten(node)
        if tgt in _LINEAR | _ADDMM:
            return self.linear(node)
        if tgt in _TRANSPOSE:
            a = self.args(node)
            first = next(iter(a.values()))
            t = self.param(first, node, "the transposed tensor")
            if tgt == "aten.permute.default":
                return t.permute(*a["dims"])
            if tgt == "aten.transpose.int":
                return t.transpose(a["dim0"], a["dim1"])
            return t.t()
        if tgt in _PASS:
            a = self.args(node)
            if "train" in a and a["train"]:
                raise FrontendError(f"{tgt} in training mode at {_where(node)}; export the "
                                    f"model in eval mode")
            return self.val(node.args[0])
        if ("_assert" in tgt or "sym_constrain" in tgt) and not node.users:
            return None
        raise FrontendError(f"unsupported op {tgt} at {_where(node)}")

    # ---- layers
    def fixed(self, name: str, w: torch.Tensor, o: int, factor: float,
              shape4: tuple[int, ...]) -> FixedWeights | None:
        fmt = self.formats.get(name)
        if fmt is not None:
            codes = fmt.codes if hasattr(fmt.codes, "shape") else fmt.codes()
            codes = np.asarray(torch.as_tensor(codes).numpy(), dtype=np.int64)
            if not torch.equal(fmt.decode().to(w.dtype).reshape(w.shape), w.detach().cpu()):
                raise FrontendError(f"layer {name}: its weights differ from its "
                                    f"{getattr(fmt, 'kind', 'weight')} format (changed after "
                                    f"compression?)")
            zero, sign, e = nx.shift_fields(codes, fmt.exp_bits)
            if int(np.max(np.where(zero != 0, 0, e), initial=0)) > (1 << self.exp_bits) - 1:
                raise FrontendError(f"layer {name}: format exponents exceed "
                                    f"CoreConfig.exp_bits={self.exp_bits}")
            codes = np.asarray(nx.encode_shift(zero, sign, np.where(zero != 0, 0, e),
                                               self.exp_bits), dtype=np.int64)
            wf = np.asarray(torch.as_tensor(fmt.w_frac).numpy(), dtype=np.int64).reshape(-1)
            return FixedWeights(codes.reshape(shape4), self.exp_bits, wf,
                                np.full(o, factor), fmt)
        if self.detect:
            got = detect_shift(w.detach().cpu().to(torch.float64).numpy(), self.exp_bits)
            if got is not None:
                codes, wf = got
                return FixedWeights(codes.reshape(shape4), self.exp_bits, wf,
                                    np.full(o, factor), None)
        return None

    def layer_name(self, node: torch.fx.Node, weight: Any) -> str:
        if isinstance(weight, torch.fx.Node) and weight.name in self.param_name:
            tgt = self.param_name[weight.name]
            return self.unique(tgt[:-len(".weight")] if tgt.endswith(".weight") else tgt)
        return self.unique(_module_path(node) or node.name)

    def conv(self, node: torch.fx.Node) -> _Act:
        a = self.args(node)
        tgt = str(node.target)
        x = self.act(a["input"], node)
        if x.flat:
            raise FrontendError(f"convolution of a flattened tensor at {_where(node)}")
        w = self.param(a["weight"], node, "the weight")
        b = self.param(a.get("bias"), node, "the bias")
        if w.ndim != 4:
            raise FrontendError(f"{tgt}: only 2-D convolutions are supported (weight shape "
                                f"{tuple(w.shape)}) at {_where(node)}")
        if tgt == "aten.convolution.default" and a["transposed"]:
            raise FrontendError(f"transposed convolution is not supported at {_where(node)}")
        groups = int(a.get("groups") or 1)
        if groups != 1:
            raise FrontendError(f"grouped convolution (groups={groups}) is not supported at "
                                f"{_where(node)}")
        dil = _pair(a.get("dilation") or 1, "dilation", node)
        if dil != (1, 1):
            raise FrontendError(f"dilated convolution (dilation={list(dil)}) is not "
                                f"supported at {_where(node)}")
        stride = _pair(a.get("stride") or 1, "stride", node)
        kh, kw = int(w.shape[2]), int(w.shape[3])
        pad = a.get("padding", 0)
        if isinstance(pad, str):
            if pad == "valid":
                pad4 = (0, 0, 0, 0)
            else:  # "same" (stride 1)
                pad4 = ((kh - 1) // 2, (kw - 1) // 2, kh - 1 - (kh - 1) // 2,
                        kw - 1 - (kw - 1) // 2)
        else:
            ph, pw = _pair(pad, "padding", node)
            pad4 = (ph, pw, ph, pw)
        shape = self.out_shape(node)
        out = (shape[1], shape[2], shape[3])
        name = self.layer_name(node, a["weight"])
        o = int(w.shape[0])
        wf = w.detach().cpu().to(torch.float64).numpy() * x.scale
        bf = (np.zeros(o) if b is None else b.detach().cpu().to(torch.float64).numpy())
        lay = FLayer("conv", name, x.tensor, name, out, _where(node), weight=wf, bias=bf,
                     stride=stride, padding=pad4, kernel=(kh, kw),
                     fixed=self.fixed(name, w, o, x.scale, tuple(w.shape)),
                     module=_module_path(node))
        return self.add_layer(lay)

    def linear(self, node: torch.fx.Node) -> _Act:
        tgt = str(node.target)
        a = self.args(node)
        if tgt == "aten.linear.default":
            xin, wnode, bnode = a["input"], a["weight"], a.get("bias")
            w = self.param(wnode, node, "the weight")
        else:  # addmm(bias, mat1, mat2) / mm(self, mat2): mat2 is the transposed weight
            xin = a["mat1"] if "mat1" in a else a["self"]
            bnode = a.get("self") if "mat1" in a else None
            wnode = a["mat2"]
            w = self.param(wnode, node, "the weight").t()
            wsrc = wnode.args[0] if isinstance(wnode, torch.fx.Node) and wnode.args else wnode
            wnode = wsrc
        b = self.param(bnode, node, "the bias")
        x = self.act(xin, node)
        c, h, wd = x.shape
        if not x.flat and (h, wd) != (1, 1):
            raise FrontendError(f"linear layer on a ({c}, {h}, {wd}) tensor that is not "
                                f"flattened at {_where(node)}")
        if not x.flat:
            raise FrontendError(f"linear layer on an unflattened tensor at {_where(node)} "
                                f"(flatten to (N, C) first)")
        o = int(w.shape[0])
        if w.ndim != 2 or int(w.shape[1]) != c * h * wd:
            raise FrontendError(f"linear weight {tuple(w.shape)} does not fit an input of "
                                f"{c * h * wd} features at {_where(node)}")
        shape4 = (o, c, h, wd)
        name = self.layer_name(node, wnode)
        wf = w.detach().cpu().to(torch.float64).numpy().reshape(shape4) * x.scale
        bf = np.zeros(o) if b is None else b.detach().cpu().to(torch.float64).numpy()
        kind = "linear" if (h, wd) == (1, 1) else "conv"
        lay = FLayer(kind, name, x.tensor, name, (o, 1, 1), _where(node), weight=wf, bias=bf,
                     kernel=(h, wd), fixed=self.fixed(name, w.reshape(shape4), o, x.scale,
                                                      shape4),
                     module=_module_path(node))
        act = self.add_layer(lay)
        act.flat = True
        return act

    def batch_norm(self, node: torch.fx.Node) -> Any:
        tgt = str(node.target)
        a = self.args(node)
        if a.get("training"):
            raise FrontendError(f"batch norm in training mode at {_where(node)}; export the "
                                f"model in eval mode (model.eval())")
        lay = self.fusable(a["input"], node)
        if lay is None or lay.bn is not None or lay.residual is not None:
            raise FrontendError(f"{tgt} at {_where(node)}: only a batch norm directly after a "
                                f"convolution or linear layer (whose output nothing else "
                                f"reads) can be folded")
        gamma = self.param(a.get("weight"), node, "the scale")
        beta = self.param(a.get("bias"), node, "the shift")
        mean = self.param(a["running_mean"], node, "the running mean")
        var = self.param(a["running_var"], node, "the running variance")
        eps = float(a["eps"])
        f64 = lambda t: t.detach().cpu().to(torch.float64).numpy()  # noqa: E731
        o = lay.weight.shape[0]
        s = (np.ones(o) if gamma is None else f64(gamma)) / np.sqrt(f64(var) + eps)
        lay.weight = lay.weight * s.reshape(-1, 1, 1, 1)
        lay.bias = (lay.bias - f64(mean)) * s + (np.zeros(o) if beta is None else f64(beta))
        if lay.fixed is not None:
            lay.fixed.factor = lay.fixed.factor * s
        lay.bn = _module_path(node) or node.name
        act = self.val(a["input"])
        if tgt == "aten.batch_norm.default":
            return act
        return _Tuple([act, None, None])

    def identity(self, node: torch.fx.Node, x: _Act, residual: _Act | None) -> FLayer:
        c = x.shape[0]
        path = _module_path(node)
        name = self.unique(f"{path}.{str(node.target).split('.')[1]}" if path else node.name)
        lay = FLayer("identity", name, x.tensor, name, x.shape, _where(node),
                     weight=np.eye(c).reshape(c, c, 1, 1), bias=np.zeros(c),
                     residual=residual.tensor if residual else None, module=_module_path(node))
        self.add_layer(lay)
        return lay

    def relu(self, node: torch.fx.Node) -> _Act:
        a = self.args(node)
        first = next(iter(a.values()))
        x = self.act(first, node)
        if x.flat and x.shape[1:] != (1, 1):
            raise FrontendError(f"relu of a flattened tensor at {_where(node)}")
        lay = self.fusable(first, node)
        if lay is not None:
            lay.relu = True
            return replace(x)
        if x.scale != 1.0:
            raise FrontendError(f"relu of an average pool's result at {_where(node)}; its "
                                f"1/(H*W) can only be folded into a following convolution "
                                f"or linear layer")
        lay = self.identity(node, x, None)
        lay.relu = True
        return _Act(lay.output, lay.out_shape, lay, flat=x.flat)

    def add(self, node: torch.fx.Node) -> _Act:
        a = self.args(node)
        if a.get("alpha", 1) != 1:
            raise FrontendError(f"add with alpha={a['alpha']} is not supported at "
                                f"{_where(node)}")
        na, nb = a["self"], a["other"]
        xa, xb = self.val(na), self.val(nb)
        if not isinstance(xa, _Act) or not isinstance(xb, _Act):
            raise FrontendError(f"add of a constant is not supported at {_where(node)} (only "
                                f"residual adds of two activation tensors)")
        if xa.shape != xb.shape or xa.flat != xb.flat:
            raise FrontendError(f"add of tensors shaped {xa.shape} and {xb.shape} at "
                                f"{_where(node)} (broadcasting is not supported)")
        if xa.scale != 1.0 or xb.scale != 1.0:
            raise FrontendError(f"add of an average pool's result at {_where(node)}")
        cands = []
        if na is not nb:
            for n, x, other in ((na, xa, xb), (nb, xb, xa)):
                lay = self.fusable(n, node)
                if lay is not None and lay.residual is None:
                    cands.append((self.layers.index(lay), lay, x, other))
        if cands:
            _, lay, x, other = max(cands, key=lambda c: c[0])
            # The main layer's output is read only by this add, so it can run last.
            self.layers.remove(lay)
            self.layers.append(lay)
            lay.residual = other.tensor
            return replace(x)
        lay = self.identity(node, xa, xb)
        return _Act(lay.output, lay.out_shape, lay, flat=xa.flat)

    def maxpool(self, node: torch.fx.Node) -> Any:
        a = self.args(node)
        x = self.act(a["self"], node)
        if x.flat:
            raise FrontendError(f"max pool of a flattened tensor at {_where(node)}")
        k = _pair(a["kernel_size"], "kernel", node)
        s = _pair(a.get("stride") or k, "stride", node)
        p = _pair(a.get("padding") or 0, "padding", node)
        d = _pair(a.get("dilation") or 1, "dilation", node)
        if d != (1, 1):
            raise FrontendError(f"dilated max pool is not supported at {_where(node)}")
        shape = self.out_shape(node)
        out = (shape[1], shape[2], shape[3])
        pad4 = (p[0], p[1], p[0], p[1])
        floor = ((x.shape[1] + 2 * p[0] - k[0]) // s[0] + 1,
                 (x.shape[2] + 2 * p[1] - k[1]) // s[1] + 1)
        if out[1:] != floor:
            raise FrontendError(f"max pool with ceil_mode=True changes the output size at "
                                f"{_where(node)}; only floor mode is supported")
        name = self.unique(_module_path(node) or node.name)
        lay = FLayer("maxpool", name, x.tensor, name, out, _where(node), kernel=k, stride=s,
                     padding=pad4, module=_module_path(node))
        act = self.add_layer(lay)
        act.scale = x.scale
        if str(node.target) == "aten.max_pool2d_with_indices.default":
            return _Tuple([act, None])
        return act

    def avgpool(self, node: torch.fx.Node) -> _Act:
        tgt = str(node.target)
        a = self.args(node)
        x = self.act(a["self"], node)
        if x.flat:
            raise FrontendError(f"average pool of a flattened tensor at {_where(node)}")
        c, h, w = x.shape
        pad4 = (0, 0, 0, 0)
        flat = False
        if tgt in _ADAPTIVE:
            oh, ow = _pair(a["output_size"], "output size", node)
            if h % oh or w % ow:
                raise FrontendError(f"adaptive average pool from {h}x{w} to {oh}x{ow} (not a "
                                    f"whole-number window) is not supported at {_where(node)}")
            k = (h // oh, w // ow)
            s = k
        elif tgt in _MEAN:
            dims = sorted(int(d) % 4 for d in (a["dim"] or []))
            if dims != [2, 3]:
                raise FrontendError(f"mean over dims {a['dim']} is not supported at "
                                    f"{_where(node)} (only over H and W: global average pool)")
            k, s = (h, w), (1, 1)
            flat = not a.get("keepdim")
        else:
            k = _pair(a["kernel_size"], "kernel", node)
            s = _pair(a.get("stride") or k, "stride", node)
            p = _pair(a.get("padding") or 0, "padding", node)
            if a.get("divisor_override") is not None:
                raise FrontendError(f"avg_pool2d with divisor_override is not supported at "
                                    f"{_where(node)}")
            if p != (0, 0) and not a.get("count_include_pad", True):
                raise FrontendError(f"avg_pool2d with padding and count_include_pad=False is "
                                    f"not supported at {_where(node)}")
            pad4 = (p[0], p[1], p[0], p[1])
        shape = self.out_shape(node)
        out = (c, (h + pad4[0] + pad4[2] - k[0]) // s[0] + 1,
               (w + pad4[1] + pad4[3] - k[1]) // s[1] + 1)
        got = shape[1:] if len(shape) == 4 else (shape[1], 1, 1)
        if tuple(got) != out:
            raise FrontendError(f"average pool output {tuple(shape)} does not match a "
                                f"floor-mode window at {_where(node)}")
        if k == (1, 1) and s == (1, 1) and pad4 == (0, 0, 0, 0):
            return replace(x, flat=flat)
        name = self.unique(_module_path(node) or node.name)
        lay = FLayer("sumpool", name, x.tensor, name, out, _where(node), kernel=k, stride=s,
                     padding=pad4, module=_module_path(node))
        act = self.add_layer(lay)
        act.scale = x.scale / (k[0] * k[1])
        act.flat = flat
        return act

    def flatten(self, node: torch.fx.Node) -> _Act:
        tgt = str(node.target)
        a = self.args(node)
        x = self.act(node.args[0], node)
        c, h, w = x.shape
        shape = self.out_shape(node)
        if tgt in _FLATTEN:
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
                                f"{_where(node)} (only flattening (N, C, H, W) to "
                                f"(N, C*H*W))")
        return replace(x, flat=True)


def trace_program(ep: torch.export.ExportedProgram, *, formats: dict[str, Any] | None = None,
                  exp_bits: int = 4, detect: bool = True) -> FloatNet:
    """Lower an exported program to a :class:`FloatNet`.

    ``formats`` maps layer names (the weight's state-dict key without ``.weight``) to
    ``shiftbook compress`` format records whose codes must be kept; with ``detect``, layers
    whose weights are already exact powers of two are kept as well.
    """
    return _Tracer(ep, dict(formats or {}), exp_bits, detect).run()
