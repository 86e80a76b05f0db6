"""A model (built-in name, ``.pt2`` file, `shiftbook compress` output) -> lowered integer IR
and a compiled program for a core config, in one call; nothing is written to disk.

The library route behind `shiftbook compile` (``shiftbook/commands/compile.py`` adds the
command line and the bundle writing) and the benchmarks::

    low, prog, cfg, info = compile_model("resnet8", config="small", calib=8, seed=0)
    write_bundle(prog, low.graph, "build/resnet8")
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shiftbook.config import CoreConfig
    from shiftbook.sw.compiler.layout import LayoutCheck
    from shiftbook.sw.frontend.float_net import FloatNet

__all__ = ["CompileError", "calibration_source", "compile_model", "early_checks"]


class CompileError(ValueError):
    """Bad input for a compile: calibration count, weights for a non-built-in model, a model
    file that cannot be read."""


def calibration_source(input_shape: tuple[int, int, int]) -> str:
    """``"digits"`` for a 1-channel 32x32 model, else ``"random"``."""
    return "digits" if tuple(input_shape) == (1, 32, 32) else "random"


def compile_model(model: str | Path, *, config: str | Path | CoreConfig | None = None,
                  calib: int | None = None, weights: str | Path | None = None, seed: int = 0,
                  max_adapt_error: float | None = None,
                  progress: Callable[[int, int, str], None] | None = None,
                  calib_cache: str | Path | None = None
                  ) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Lower and compile ``model``; nothing is written. Returns (lowered, program, config,
    info).

    ``config``: a preset name, a JSON file or a ``CoreConfig`` (default ``small``, as
    :func:`shiftbook.config.load_config`); ``calib``: number of calibration images (default
    ``DEFAULT_CALIB``): the digits training set for a 1-channel 32x32 model, else seeded
    standard-normal images; ``weights``: a float checkpoint for a built-in model name (default
    seeded random weights); ``seed``: of random weights and random calibration images;
    ``max_adapt_error``: the largest relative output error a layer may get from being fitted to
    the accumulator (default ``DEFAULT_MAX_ADAPT_ERROR``; sw/frontend/adaptation.py): beyond
    it, an error naming the layer. Each adapted layer's record is its ``"adaptation"`` key in
    ``low.layers`` and in the program's (bundle's) layer metadata. ``progress(done, total,
    layer)`` is called as the quantizer finishes each layer. ``calib_cache``: a directory
    caching the quantizer's result keyed by model, calibration images, config and quantizer
    code (``sw/frontend/calib_cache.py``); ``info["calib_cache"]`` says ``hit``, ``stored`` or
    why not.

    Everything the model's shapes and the config decide (memory image size, buffer fits, layer
    register widths, kept layers' accumulator bounds) is checked before calibration
    (:func:`early_checks`): a model too large for the config fails in seconds."""
    from shiftbook.config import CoreConfig, load_config
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.compiler.tiling import CompileError as LayoutError
    from shiftbook.sw.frontend import DEFAULT_CALIB, default_calibration, load_source
    from shiftbook.sw.frontend.adaptation import DEFAULT_MAX_ADAPT_ERROR, check_adaptation
    from shiftbook.sw.frontend.precheck import check_module_memory
    from shiftbook.sw.frontend.quantize import quantize_net
    from shiftbook.sw.frontend.trace import trace_program

    cfg = config if isinstance(config, CoreConfig) else load_config(config)
    limit = DEFAULT_MAX_ADAPT_ERROR if max_adapt_error is None else max_adapt_error
    check_adaptation([], cfg.acc_bits, limit)       # the limit itself, before any work
    if seed < 0:
        raise CompileError(f"--seed {seed} must be >= 0")
    if calib_cache is not None and Path(calib_cache).exists() and not Path(calib_cache).is_dir():
        raise CompileError(f"--calib-cache {calib_cache}: not a directory")
    n = DEFAULT_CALIB if calib is None else calib
    if n < 1:
        raise CompileError(f"--calib must be a positive integer, not {n}")
    model = str(model)
    if weights is not None and (Path(model).suffix == ".pt2" or Path(model).is_file()):
        raise CompileError("--weights applies to a built-in model name only")
    try:
        src = load_source(model, weights=weights, seed=seed, before_export=lambda m, shape, f:
                          check_module_memory(m, shape, f, cfg))
    except LayoutError:
        raise       # the model does not fit the config (from its shapes, before export)
    except Exception as e:  # noqa: BLE001 - e.g. an unpickling error of a foreign file
        first = (str(e).strip().splitlines() or [""])[0]
        if isinstance(e, ValueError | RuntimeError | OSError) and model in first:
            raise       # our own message, naming the file
        raise CompileError(_unreadable(model, e, first)) from None
    shape = src.input_shape
    from shiftbook.sw.frontend.onnx_import import OnnxSource

    onnx = isinstance(src, OnnxSource)      # its own float net and fixed scales (onnx_lower)
    net = src.float_net(cfg.exp_bits) if onnx else trace_program(
        src.program, formats=src.formats, exp_bits=cfg.exp_bits, detect=True)
    early_checks(net, cfg)          # shapes against the config, before any calibration
    csrc = calibration_source(shape)
    images = default_calibration(shape, n, seed=seed, source=csrc)
    cache_note = None
    if onnx:
        low = src.quantize(images, cfg, progress=progress)
    elif calib_cache is None:
        low = quantize_net(net, images, cfg, progress=progress)
    else:
        low, cache_note = _cached_quantize(net, images, cfg, calib_cache, progress)
    check_adaptation(low.layers, cfg.acc_bits, limit)
    # The bundle's stored input: the first calibration image, quantized.
    x0 = low.quantize_input(images[:1])[0]
    prog = compile_graph(low.graph, cfg, {low.input: x0})
    adapted = {rep["name"]: rep["adaptation"] for rep in low.layers if "adaptation" in rep}
    prog.layers = [_with_adaptation(lay, adapted.get(lay.name)) for lay in prog.layers]
    info = {"model": model, "label": src.label, "calibration": csrc, "calib_images": n,
            "seed": seed, "input_shape": list(shape)}
    if calib_cache is not None:
        info["calib_cache"] = "not used for an ONNX model" if onnx else cache_note
    return low, prog, cfg, info


def _cached_quantize(net: FloatNet, images: Any, cfg: CoreConfig, directory: str | Path,
                     progress: Callable[[int, int, str], None] | None) -> tuple[Any, str]:
    """``quantize_net`` through the calibration cache: (lowered, status line)."""
    from shiftbook.sw.frontend import calib_cache as cc
    from shiftbook.sw.frontend.quantize import quantize_net

    why = cc.uncacheable(net)
    if why is not None:
        return quantize_net(net, images, cfg, progress=progress), f"not cached: {why}"
    # quantize_net's options as compile uses them (its defaults, read from its signature)
    options = {k: p.default for k, p in inspect.signature(quantize_net).parameters.items()
               if p.default is not inspect.Parameter.empty and k != "progress"}
    key = cc.cache_key(net, images, cfg, options)
    low, status = cc.load_entry(directory, key, net, cfg)
    if low is not None:
        return low, f"hit ({Path(directory) / key})"
    low = quantize_net(net, images, cfg, progress=progress)
    try:
        cc.store_entry(directory, key, low)
    except OSError as e:
        return low, f"not stored: {e.strerror or e} ({directory})"
    return low, ("stored" if status == "miss" else status) + f" ({Path(directory) / key})"


def early_checks(net: FloatNet, cfg: CoreConfig, weights: str = "auto") -> LayoutCheck:
    """The checks a traced network's shapes allow against ``cfg`` (no calibration, no
    quantization): kept layers' accumulator bounds (``FrontendError``), then the compiler's
    own layout of a skeleton graph: buffer fits, layer-register field widths and the memory
    image's size (``CompileError``, one line naming the layer or the sizes)."""
    from shiftbook.sw.compiler.layout import check_layout
    from shiftbook.sw.frontend.precheck import check_kept_accumulators, skeleton_graph

    check_kept_accumulators(net, cfg, weights)
    return check_layout(skeleton_graph(net, cfg), cfg)


def _with_adaptation(lay: Any, adaptation: dict[str, Any] | None) -> Any:
    """A program layer record (``LayerMeta``) with its adaptation record."""
    if adaptation is None:
        return lay
    return dataclasses.replace(lay, adaptation=adaptation)


def _unreadable(model: str, e: BaseException, first: str) -> str:
    """One line for a model file that none of the readers understood."""
    p = Path(model)
    if p.is_file() and p.stat().st_size == 0:
        return f"cannot read model {model}: the file is empty"
    if p.is_file():
        return (f"cannot read model {model}: not a .pt2 program, a shiftbook compressed model "
                f"or a checkpoint naming a built-in model ({type(e).__name__}: "
                f"{first[:120] or 'no message'})")
    return f"cannot read model {model}: {first or type(e).__name__}"
