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
from typing import Any

import numpy as np
import torch

from shiftbook import numerics as nx

from .errors import FrontendError
from .float_net import WEIGHTED, FixedWeights, FLayer, FloatNet, detect_shift
from .trace_nodes import Act, TupleValue, module_path, where
from .trace_ops import HANDLERS

__all__ = ["FixedWeights", "FLayer", "FloatNet", "Tracer", "trace_program", "detect_shift"]


class Tracer:
    """Walks an exported program's nodes in order, binding each to its value (a parameter
    tensor, an :class:`Act` or a :class:`TupleValue`) and collecting :class:`FLayer` s; the
    per-op work is in :mod:`.trace_ops`."""

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

    def act(self, a: Any, node: torch.fx.Node, what: str = "input") -> Act:
        v = self.val(a)
        if not isinstance(v, Act):
            raise FrontendError(f"{node.target}: its {what} is not an activation tensor (a "
                                f"constant or parameter) at {where(node)}")
        return v

    def param(self, a: Any, node: torch.fx.Node, what: str) -> torch.Tensor | None:
        if a is None:
            return None
        v = self.val(a)
        if not isinstance(v, torch.Tensor):
            raise FrontendError(f"{node.target}: {what} must be a parameter or constant, not "
                                f"a computed tensor, at {where(node)}")
        return v

    def out_shape(self, node: torch.fx.Node) -> tuple[int, ...]:
        v = node.meta.get("val")
        if isinstance(v, list | tuple) and v:
            v = v[0]
        if v is None or not hasattr(v, "shape"):
            raise FrontendError(f"{node.target}: no shape recorded at {where(node)} (export "
                                f"the model with torch.export)")
        return tuple(int(s) for s in v.shape)

    def fusable(self, a: Any, node: torch.fx.Node) -> FLayer | None:
        """The weighted layer producing ``a`` if ``node`` is the only reader and it has no
        ReLU yet (so the op at ``node`` may be folded into it)."""
        if not isinstance(a, torch.fx.Node):
            return None
        v = self.env.get(a.name)
        if not isinstance(v, Act) or v.layer is None or v.layer.kind not in WEIGHTED:
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
                if self.placeholder(node, kinds.get(node.name)):
                    user_inputs.append(node)
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
                raise FrontendError(f"unsupported graph node kind {node.op!r} at {where(node)}")
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

    def placeholder(self, node: torch.fx.Node, spec: Any) -> bool:
        """Bind a parameter, buffer or constant placeholder to its tensor; True for the
        user's input (bound later, by :meth:`start`)."""
        kind = getattr(spec.kind, "name", str(spec.kind)) if spec else "USER_INPUT"
        if kind == "USER_INPUT":
            return True
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
        return False

    def start(self, node: torch.fx.Node) -> None:
        shape = self.out_shape(node)
        if len(shape) != 4:
            raise FrontendError(f"model input {node.name!r} has shape {shape}; expected an "
                                f"image batch (N, C, H, W)")
        chw = (shape[1], shape[2], shape[3])
        name = self.unique(node.name)
        self.net = FloatNet(input=name, input_shape=chw, shapes={name: chw})
        self.env[node.name] = Act(name, chw, None)

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
            if not isinstance(v, Act):
                raise FrontendError("a model output is not an activation tensor")
            if v.scale != 1.0:
                raise FrontendError(f"model output {o.name!r} is an average pool's result; its "
                                    f"1/(H*W) can only be folded into a following convolution "
                                    f"or linear layer")
            self.net.outputs.append(v.tensor)
        self.net.layers = self.layers

    def add_layer(self, lay: FLayer) -> Act:
        assert self.net is not None
        self.layers.append(lay)
        self.net.shapes[lay.output] = lay.out_shape
        return Act(lay.output, lay.out_shape, lay)

    def call(self, node: torch.fx.Node) -> Any:
        """The value of a ``call_function`` node: ``getitem`` of a tuple op, a dropped
        assertion, or the op's handler in :data:`~.trace_ops.HANDLERS`."""
        tgt = str(node.target)
        if node.target is operator.getitem:
            seq, idx = self.val(node.args[0]), node.args[1]
            if isinstance(seq, TupleValue):
                item = seq.items[idx]
                if item is None and len(node.users):
                    raise FrontendError(f"output {idx} of a tuple op is not supported at "
                                        f"{where(node)}")
                return item
            raise FrontendError(f"indexing is not supported at {where(node)}")
        handler = HANDLERS.get(tgt)
        if handler is not None:
            return handler(self, node)
        if ("_assert" in tgt or "sym_constrain" in tgt) and not node.users:
            return None
        raise FrontendError(f"unsupported op {tgt} at {where(node)}")

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
        return self.unique(module_path(node) or node.name)

def trace_program(ep: torch.export.ExportedProgram, *, formats: dict[str, Any] | None = None,
                  exp_bits: int = 4, detect: bool = True) -> FloatNet:
    """Lower an exported program to a :class:`FloatNet`.

    ``formats`` maps layer names (the weight's state-dict key without ``.weight``) to
    ``shiftbook compress`` format records whose codes must be kept; with ``detect``, layers
    whose weights are already exact powers of two are kept as well.
    """
    return Tracer(ep, dict(formats or {}), exp_bits, detect).run()
