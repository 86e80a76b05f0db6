"""Compression methods that produce hardware weight formats (docs/compression.md).

``compress(model, method, train_loader, test_loader, opts)`` returns a
:class:`CompressedModel` whose every conv/linear layer carries a :class:`ShiftFormat` or
:class:`CodebookFormat` and computes with the decoded hardware weights.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from torch import nn
from torch.utils.data import DataLoader

from shiftbook.sw.models.formats import CodebookFormat, FormatError, ShiftFormat
from shiftbook.sw.train import evaluate

from .common import CompressOptions, Steps
from .core import (
    CompressedModel,
    CompressError,
    compressible_layers,
    fold_bn,
    has_bn,
    load_compressed,
    save_compressed,
)
from .mlq import mlq
from .pq import fit_ratio, pq, pq_plan
from .shift import deepshift_ps, deepshift_q, inq
from .size import LayerPlan, SizeReport, plan_of, size_report
from .slq import slq

__all__ = ["METHODS", "compress", "CompressOptions", "CompressedModel", "CompressError",
           "ShiftFormat", "CodebookFormat", "FormatError", "save_compressed",
           "load_compressed", "model_size", "size_report", "LayerPlan", "SizeReport",
           "pq_plan", "fit_ratio", "Steps", "check_options", "fold_bn", "has_bn"]

METHODS = {
    "deepshift-q": deepshift_q,
    "deepshift-ps": deepshift_ps,
    "inq": inq,
    "kmeans": slq,
    "mlq": mlq,
    "pq": pq,
}


def compress(model: nn.Module, method: str, train_loader: DataLoader, test_loader: DataLoader,
             opts: CompressOptions | None = None, *, model_name: str | None = None,
             model_args: dict[str, Any] | None = None,
             input_shape: tuple[int, int, int] | None = None) -> CompressedModel:
    """Compress a float model; ``meta["steps"]`` holds the test accuracy after every step.

    With ``opts.fold_bn`` (default) every conv/linear -> BN pair is folded first
    (:func:`.core.fold_bn`; ``input_shape`` (C, H, W) for tracing, default: the test
    loader's images), so the compressed model has conv biases and no BN, and the compiler keeps
    every code exactly (docs/compression.md).
    """
    opts = opts or CompressOptions()
    check_options(model, method, opts)
    steps = Steps()
    t0 = time.time()
    float_acc = evaluate(model, test_loader)
    steps.add("float", float_acc)
    fp32_bytes = 4.0 * sum(p.numel() for p in model.parameters())
    folded = None
    if opts.fold_bn and has_bn(model):
        shape = input_shape or tuple(next(iter(test_loader))[0].shape[1:])
        model, folded = fold_bn(model, shape)
        steps.add("bn folded", evaluate(model, test_loader))
    kw: dict[str, Any] = {"fp32_bytes": fp32_bytes} if method == "pq" else {}
    m, formats = METHODS[method](model, train_loader, test_loader, opts, steps, **kw)
    m.eval()
    meta = {"model": model_name, "model_args": dict(model_args or {}), "method": method,
            "exp_bits": opts.exp_bits, "bn_folded": folded, "fp32_bytes": fp32_bytes,
            "paper_fp32": [compressible_layers(m)[0][0]] if method == "pq" else [],
            "options": {k: (list(v) if isinstance(v, tuple) else v)
                        for k, v in dataclasses.asdict(opts).items()}}
    cm = CompressedModel(m, formats, meta)
    cm.check()
    final = evaluate(cm, test_loader)
    steps.add("hardware weights", final)
    cm.meta.update({"steps": steps.records, "float_acc": float_acc, "acc": final,
                    "seconds": round(time.time() - t0, 1)})
    return cm


def check_options(model: nn.Module, method: str, opts: CompressOptions) -> None:
    """Refuse bad options before any work (one-line CompressError)."""
    if method not in METHODS:
        raise CompressError(f"unknown method {method!r} ({', '.join(METHODS)})")
    if opts.rounding not in ("log", "linear"):
        raise CompressError(f"unknown rounding {opts.rounding!r} (log or linear)")
    if not 1 <= opts.exp_bits <= 5:
        raise CompressError(f"exp_bits={opts.exp_bits} must be in [1, 5] (CoreConfig range)")
    if opts.epochs < 0:
        raise CompressError(f"epochs must be >= 0, not {opts.epochs}")
    if opts.target_ratio is not None and method != "pq":
        raise CompressError(f"a target ratio (--ratio) applies to pq only, not {method}")
    if method == "pq":
        pq_plan(model, opts)
    elif opts.d not in (None, 1) and method in ("kmeans", "mlq"):
        raise CompressError(f"{method} is scalar weight sharing (d=1), not d={opts.d}")
    if method in ("kmeans", "mlq"):
        if method == "mlq" and opts.mlq_group < 1:
            raise CompressError(f"mlq_group={opts.mlq_group} must be >= 1 (layers per step)")
        k = opts.k or 16
        if k < 2 or k > opts.max_k:
            raise CompressError(f"k={k} must be in [2, max_k={opts.max_k}]")
        for name, mod in compressible_layers(model):
            if k > mod.weight.numel():
                raise CompressError(f"k={k} is larger than the number of weights "
                                    f"({mod.weight.numel()}) of layer {name}")


def model_size(cm: CompressedModel) -> SizeReport:
    """Paper and hardware sizes of a compressed model (see :mod:`.size`)."""
    fp32 = set(cm.meta.get("paper_fp32", []))
    plans = {n: plan_of(f, fp32=n in fp32) for n, f in cm.formats.items()}
    return size_report(cm.model, plans, fp32_bytes=cm.meta.get("fp32_bytes"))
