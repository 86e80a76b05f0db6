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

__all__ = ["core_codebook", "skeleton_graph", "check_kept_accumulators", "GAIN_TOLERANCE"]

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
