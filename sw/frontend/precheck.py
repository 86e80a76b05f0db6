"""What a :class:`FloatNet` needs of a core, known from its shapes before any calibration or
quantization: the skeleton IR graph the compiler's layout check places and plans
(``sw/compiler/layout.check_layout``), and the accumulator bound of layers whose shift codes
are kept as they are (no post-training scale can make those fit later).

``shiftbook compile`` runs both first, so a model too large for a config fails in seconds with
the layer and the number that does not fit, instead of after calibration.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from shiftbook import numerics as nx
from shiftbook.config import CoreConfig
from shiftbook.sw.ir import Conv2d, Graph, Linear, MaxPool2d, SumPool2d, TensorSpec
from shiftbook.weights import CodebookWeights, WeightFormatError

from .errors import FrontendError
from .float_net import WEIGHTED, FLayer, FloatNet

__all__ = ["core_codebook", "skeleton_graph", "check_kept_accumulators", "check_module_memory",
           "module_memory_bound", "GAIN_TOLERANCE"]

# A kept layer's folded per-channel factor counts as a power of two within this relative error.
GAIN_TOLERANCE = 2.0**-10


def core_codebook(rec: Any, cfg: CoreConfig, what: str = "layer") -> CodebookWeights:
    """A compressed codebook record as the core decodes it (its codes re-encoded at the
    config's ``exp_bits``), refused (``WeightFormatError``/``ValueError``) if the core cannot
    decode it (``max_k``, ``max_d``, block layout)."""
    cbw = CodebookWeights.from_record(rec)
    zero, sign, e = nx.shift_fields(cbw.codebook, cbw.exp_bits)
    book = np.asarray(nx.encode_shift(zero, sign, np.where(zero != 0, 0, e), cfg.exp_bits),
                      dtype=np.int64)
    cbw = CodebookWeights(cbw.shape, cbw.k, cbw.d, cfg.exp_bits, book, cbw.indices)
    cbw.check_config(cfg.max_k, cfg.max_d, cfg.exp_bits, what=what)
    return cbw


def _codebook_of(lay: FLayer, cfg: CoreConfig) -> CodebookWeights | None:
    """The layer's compressed codebook as the core would store it, or None (no codebook, or
    one the core cannot decode: the layer then compiles as raw shift codes)."""
    fx = lay.fixed
    if fx is None or fx.fmt is None or getattr(fx.fmt, "kind", "") != "codebook":
        return None
    try:
        return core_codebook(fx.fmt, cfg, f"layer {lay.name!r}")
    except (WeightFormatError, ValueError):
        return None


def skeleton_graph(net: FloatNet, cfg: CoreConfig) -> Graph:
    """The IR graph of ``net`` with every shape, kernel, stride, padding, residual and kept
    codebook format of the lowered one, and zero-code weights (scales 0): what the compiler's
    layout needs. A layer whose codebook the frontend may still drop is given its codebook
    (the smaller blob), so the layout is a lower bound of the real one."""
    g = Graph(inputs=[net.input], outputs=list(net.outputs))
    g.add_tensor(TensorSpec(net.input, net.input_shape, 0))
    zero = nx.zero_code(cfg.exp_bits)
    for lay in net.layers:
        g.add_tensor(TensorSpec(lay.output, lay.out_shape, 0))
        if lay.kind in WEIGHTED:
            assert lay.weight is not None
            codes = np.full(lay.weight.shape, zero, np.int64)
            kind = Linear if lay.kind == "linear" else Conv2d
            op = kind(lay.name, lay.input, lay.output,
                      weight=codes[:, :, 0, 0] if kind is Linear else codes,
                      exp_bits=cfg.exp_bits, relu=lay.relu, stride=lay.stride,
                      padding=lay.padding, residual=lay.residual)
            cbw = _codebook_of(lay, cfg)
            if cbw is not None:
                try:
                    op.with_codebook(cbw)
                except ValueError:
                    op.with_codebook(None)
            g.add_op(op)
        elif lay.kind == "maxpool":
            g.add_op(MaxPool2d(lay.name, lay.input, lay.output, kernel=lay.kernel,
                               stride=lay.stride, padding=lay.padding))
        else:
            g.add_op(SumPool2d(lay.name, lay.input, lay.output, kernel=lay.kernel,
                               stride=lay.stride, padding=lay.padding, shift=0))
    return g


def _kept(lay: FLayer, weights: str) -> bool:
    """Whether the frontend keeps the layer's codes as given (``quantize.weights_of``)."""
    fx = lay.fixed
    if fx is None or weights not in ("auto", "keep") or lay.kind == "identity":
        return False
    if weights == "keep" or getattr(fx.fmt, "kind", "") == "codebook":
        return True
    f = np.abs(fx.factor.astype(np.float64))
    af = np.where(f == 0, 1.0, f)
    m = af / np.exp2(np.round(np.log2(af)))
    return not bool(np.any(np.abs(m - 1.0) > GAIN_TOLERANCE))


def check_kept_accumulators(net: FloatNet, cfg: CoreConfig, weights: str = "auto") -> None:
    """Refuse (:class:`FrontendError` naming the layer and the bound) a layer whose kept codes
    alone, before any bias or residual, can overflow the accumulator: no scale the frontend
    may choose changes a kept layer's integer weights."""
    limit = (1 << (cfg.acc_bits - 1)) - 1
    for lay in net.layers:
        if not _kept(lay, weights):
            continue
        assert lay.fixed is not None
        w_int = np.asarray(nx.decode_shift(lay.fixed.codes, lay.fixed.exp_bits), np.int64)
        bound = nx.acc_bound(w_int, act_bits=cfg.act_bits)
        if bound.size and int(bound.max()) > limit:
            o = int(np.argmax(bound))
            raise FrontendError(f"layer {lay.name!r} ({lay.where}): its kept weight codes give "
                                f"a worst-case accumulator of {int(bound.max()):,} in output "
                                f"channel {o}, beyond the {cfg.acc_bits}-bit accumulator's "
                                f"{limit:,}")


def check_module_memory(module: Any, input_shape: tuple[int, int, int],
                        formats: dict[str, Any], cfg: CoreConfig) -> None:
    """Refuse (``CompileError``, the same line as ``layout.check_layout``) a float module
    whose memory image cannot fit ``cfg`` (:func:`module_memory_bound`), before
    ``torch.export`` (seconds for a ResNet-50) and before tracing. Modules with kept formats
    (codebook blobs are smaller than raw codes) are left to the layout check."""
    from shiftbook.sw.compiler.layout import memory_error
    from shiftbook.sw.compiler.tiling import CompileError

    if formats:
        return
    found = module_memory_bound(module, input_shape, cfg)
    if found is not None and found[0] > cfg.mem_words * cfg.bus_bytes:
        need, (name, n) = found
        raise CompileError(memory_error(need, cfg, "program and data need at least")
                           + f"; the largest layer, {name!r}, alone {n:,}")


def module_memory_bound(module: Any, input_shape: tuple[int, int, int], cfg: CoreConfig
                        ) -> tuple[int, tuple[str, int]] | None:
    """A lower bound of the data bytes the compiler lays out for a float ``module``, from one
    forward pass of a zero image, and the largest layer's share; None if the module does not
    run on such an image (the export that follows names the problem).

    Counted: the input and the output tensor of every convolution, linear and pooling module
    (each is one tensor of the lowered graph: batch norm, ReLU and a residual add fold into
    the convolution before them), and the raw shift-code weight and bias blobs of every
    convolution and linear (``layout.param_sizes``); no program bytes."""
    import torch
    from torch import nn

    from shiftbook.placement import MemoryImage
    from shiftbook.sw.compiler.layout import param_sizes

    mem = MemoryImage(cfg.bus_bytes, 0)
    mem.place_tensor("input", tuple(input_shape), 0)
    largest = ("", 0)
    zero = nx.zero_code(cfg.exp_bits)

    def hook(mod: Any, _inp: Any, out: Any) -> None:
        nonlocal largest
        if not isinstance(out, torch.Tensor) or out.ndim not in (2, 4):
            return
        shape = tuple(out.shape[1:]) if out.ndim == 4 else (int(out.shape[1]), 1, 1)
        before = mem.top
        mem.place_tensor(names[mod], shape, 0)
        if isinstance(mod, nn.Conv2d | nn.Linear):
            w = mod.weight
            kshape = tuple(w.shape) if w.ndim == 4 else (*w.shape, 1, 1)
            probe = Conv2d(names[mod], "x", "y", weight=np.full(kshape, zero, np.int64),
                           exp_bits=cfg.exp_bits)
            wb, bb, _ = param_sizes(probe, cfg, None)
            mem.alloc(wb)
            mem.alloc(bb)
        if mem.top - before > largest[1]:
            largest = (names[mod], mem.top - before)

    kinds = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d)
    names = {m: n for n, m in module.named_modules() if isinstance(m, kinds)}
    handles = [m.register_forward_hook(hook) for m in names]
    try:
        with torch.no_grad():
            module(torch.zeros(1, *input_shape))
    except Exception:  # noqa: BLE001 - the export that follows names the problem
        return None
    finally:
        for h in handles:
            h.remove()
    return mem.top, largest
