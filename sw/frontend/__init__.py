"""Network frontend: a float or compressed torch model -> integer IR (docs/frontend.md).

``lower(model, calib=images, config=cfg)`` resolves the model (``.pt2``, built-in name,
checkpoint, ``nn.Module``), walks its ``torch.export`` graph into a float network with batch
norm folded (:mod:`.trace`), then quantizes it: shift-code weights, calibrated power-of-two
activation scales, biases, shifts and accumulator proofs (:mod:`.quantize`). The result is a
:class:`Lowered` holding the IR ``Graph`` (ops of ``sw/ir.py``; ``Lowered.run`` executes it
with the golden executor ``sw/reference.run_graph``).

An unsupported op or shape raises :class:`FrontendError` (one line naming the op, the graph
node and the module path) before any quantization starts; nothing is ever written to disk.
"""

from __future__ import annotations

from typing import Any

import torch

from shiftbook.config import CoreConfig
from shiftbook.sw.ir import MaxPool2d, SumPool2d

from .errors import FrontendError
from .fold import fold_batchnorm
from .onnx_import import OnnxSource
from .quantize import ROUNDINGS, WEIGHT_MODES, Lowered, act_frac, quantize_input, quantize_net
from .source import ModelSource, export_module, load_source, save_pt2
from .trace import FloatNet, trace_program

__all__ = ["lower", "lower_source", "default_calibration", "FrontendError", "Lowered",
           "FloatNet", "ModelSource", "MaxPool2d", "SumPool2d", "act_frac",
           "quantize_input", "load_source", "export_module", "save_pt2", "trace_program",
           "WEIGHT_MODES", "ROUNDINGS", "DEFAULT_CALIB", "fold_batchnorm"]

DEFAULT_CALIB = 32


def default_calibration(input_shape: tuple[int, int, int], n: int = DEFAULT_CALIB,
                        seed: int = 0, source: str = "random") -> torch.Tensor:
    """``n`` calibration images for a model without its own data.

    ``source="random"``: seeded standard-normal images (smoke tests only); ``"digits"``: the
    first ``n`` training images of scikit-learn's digits (sw/data) at the model's size, for
    models trained on them (one or three channels, square inputs of at least 8 pixels).
    """
    if n < 1:
        raise FrontendError(f"the number of calibration images must be >= 1, not {n}")
    c, h, w = input_shape
    if source == "digits":
        if c not in (1, 3) or h != w or h < 8:
            raise FrontendError(f"digits calibration needs a (1 or 3, S, S) input with "
                                f"S >= 8, not {tuple(input_shape)}")
        from shiftbook.sw.data import load_digits

        return load_digits(size=h, channels=c).x_train[:n]
    if source != "random":
        raise FrontendError(f"unknown calibration source {source!r} (random, digits)")
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *input_shape, generator=g)


def lower_source(src: ModelSource, *, calib: Any = None, config: CoreConfig | None = None,
                 n_calib: int = DEFAULT_CALIB, weights: str = "auto",
                 rounding: str = "log", percentile: float = 100.0,
                 bias_correction: bool = True, gptq: bool = True, seed: int = 0) -> Lowered:
    cfg = config or CoreConfig()
    if isinstance(src, OnnxSource):     # an ONNX / QONNX model (sw/frontend/onnx_lower.py)
        from .onnx_lower import lower_onnx

        if calib is None:
            calib = default_calibration(src.input_shape, n_calib, seed)
        return lower_onnx(src, calib, cfg, weights=weights, rounding=rounding,
                          percentile=percentile, bias_correction=bias_correction, gptq=gptq)
    net = trace_program(src.program, formats=src.formats, exp_bits=cfg.exp_bits,
                        detect=weights != "ptq")
    if calib is None:
        calib = default_calibration(net.input_shape, n_calib, seed)
    return quantize_net(net, calib, cfg, weights=weights, rounding=rounding,
                        percentile=percentile, bias_correction=bias_correction, gptq=gptq)


def lower(model: Any, *, calib: Any = None, config: CoreConfig | None = None,
          n_calib: int = DEFAULT_CALIB, weights: str = "auto", rounding: str = "log",
          percentile: float = 100.0, bias_correction: bool = True, gptq: bool = True,
          input_shape: tuple[int, int, int] | None = None,
          num_classes: int | None = None, in_channels: int | None = None,
          checkpoint: str | None = None, seed: int = 0) -> Lowered:
    """Lower ``model`` to the integer IR.

    Parameters
    ----------
    model: ``.pt2`` path, built-in name, checkpoint path, ``nn.Module`` or ``ExportedProgram``.
    calib: float calibration images ``(N, C, H, W)`` (preprocessed like the model's inputs);
        default: ``n_calib`` seeded normal images.
    config: the CoreConfig (``exp_bits``, ``acc_bits``); default ``CoreConfig()``.
    weights: ``"auto"`` keeps the codes of compressed formats / exact power-of-two weights
        where the folded batch norm allows it (a power-of-two scale), converting other shift
        layers and float layers post-training; ``"keep"`` always keeps codes (a non-power-of-two
        batch-norm scale becomes a per-channel gain error); ``"ptq"`` converts every layer
        from its folded float weights.
    rounding: post-training shift rounding (``"log"``: nearest in log2, ``"linear"``).
    percentile: of ``|values|`` used as the calibrated maximum (100: the maximum).
    bias_correction: post-training layers subtract the mean output error of their rounded
        weights on the calibration images from their bias.
    gptq: post-training layers round their weights sequentially with error feedback
        (GPTQ-style, on the calibration inputs) instead of independently.
    """
    src = load_source(model, input_shape=input_shape, num_classes=num_classes,
                      in_channels=in_channels, weights=checkpoint, seed=seed)
    return lower_source(src, calib=calib, config=config, n_calib=n_calib, weights=weights,
                        rounding=rounding, percentile=percentile,
                        bias_correction=bias_correction, gptq=gptq, seed=seed)
