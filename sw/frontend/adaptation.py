"""What the quantizer changed in a layer to fit a core config, measured and bounded.

A post-training layer whose worst-case accumulator sum does not fit ``CoreConfig.acc_bits``
gets some channels' ``w_frac`` lowered (coarser weights, small ones rounded to zero) until it
fits (:mod:`.quantize`). That is lossy, so it is measured against the layer it replaces (the
same codes rule at the unadapted ``w_frac``, same integer input) on the calibration images:

- ``weights_changed``: fraction of weights whose real value (``code * 2**-w_frac``) differs;
- ``weights_zeroed``: fraction of weights that were non-zero and became zero;
- ``rel_error``: ``||y - y0|| / ||y0||`` over the calibration batch, ``y`` and ``y0`` the
  layer's real outputs before ReLU and residual (accumulator plus bias at accumulator scale)
  of the adapted and the unadapted layer;
- ``w_frac_lowered``: the largest number of steps a channel's ``w_frac`` went down.

The frontend reports it per layer (``Lowered.layers[i]["adaptation"]``, copied into the
bundle's layer metadata); :func:`check_adaptation` refuses a network in which a layer's
``rel_error`` is beyond a limit (``DEFAULT_MAX_ADAPT_ERROR``, `shiftbook compile
--max-adapt-error`). See docs/frontend.md.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from shiftbook import numerics as nx
from shiftbook.sw.ir import Conv2d

from .errors import FrontendError
from .fast_acc import shift_conv_acc

__all__ = ["AdaptationError", "DEFAULT_MAX_ADAPT_ERROR", "adaptation_lines",
           "check_adaptation", "measure_adaptation"]

#: Largest relative output error (against the unadapted layer) a compile accepts by default.
#: ResNet-8/20 need no adaptation on any preset; ResNet-18-sized 3x3 convs (256/512 channels,
#: 32-bit accumulator) measure 0.07 / 0.013; a 512->8 3x3 conv on a 16-bit accumulator
#: measures 0.6-1.0 (nearly every weight zeroed). docs/frontend.md section 5.
DEFAULT_MAX_ADAPT_ERROR = 0.25


class AdaptationError(FrontendError):
    """A layer had to be changed more than the limit allows to fit the core config."""


def _real_out(x: np.ndarray, codes: np.ndarray, wf: np.ndarray, bias: np.ndarray,
              in_frac: int, exp_bits: int, stride: Any, padding: Any,
              acc: np.ndarray | None = None) -> np.ndarray:
    o = codes.shape[0]
    if acc is None:
        probe = Conv2d("probe", "x", "y", weight=codes, exp_bits=exp_bits, stride=stride,
                       padding=padding)
        acc = shift_conv_acc(x, probe)
    acc = acc + np.asarray(bias, np.int64).reshape(1, o, 1, 1)
    return acc * np.exp2(-(in_frac + wf).astype(np.float64)).reshape(1, o, 1, 1)


def measure_adaptation(x: np.ndarray, before: tuple[np.ndarray, np.ndarray, np.ndarray],
                       after: tuple[np.ndarray, np.ndarray, np.ndarray], *, in_frac: int,
                       exp_bits: int, stride: Any, padding: Any,
                       accs: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """The record above for a layer on integer input ``x`` ``(N, C, H, W)``; ``before`` and
    ``after``: (codes ``(O, C, KH, KW)``, ``w_frac`` ``(O,)``, integer bias ``(O,)``);
    ``accs``: the two codes' accumulators on ``x`` if the caller has them (else computed)."""
    (c0, wf0, b0), (c1, wf1, b1) = before, after
    o = c0.shape[0]
    v0 = nx.decode_shift(c0, exp_bits) * np.exp2(-wf0.astype(np.float64)).reshape(o, 1, 1, 1)
    v1 = nx.decode_shift(c1, exp_bits) * np.exp2(-wf1.astype(np.float64)).reshape(o, 1, 1, 1)
    a0, a1 = accs if accs is not None else (None, None)
    y0 = _real_out(x, c0, wf0, b0, in_frac, exp_bits, stride, padding, a0)
    y1 = _real_out(x, c1, wf1, b1, in_frac, exp_bits, stride, padding, a1)
    n0 = float(np.linalg.norm(y0))
    diff = float(np.linalg.norm(y1 - y0))
    rel = diff / n0 if n0 > 0 else (0.0 if diff == 0 else math.inf)
    return {"weights_changed": round(float(np.mean(v0 != v1)), 6),
            "weights_zeroed": round(float(np.mean((v0 != 0) & (v1 == 0))), 6),
            "rel_error": round(rel, 6),
            "w_frac_lowered": int(np.max(wf0 - wf1))}


def adaptation_lines(layers: list[dict[str, Any]], acc_bits: int) -> list[str]:
    """One line per adapted layer of a ``Lowered.layers`` report."""
    out = []
    for rep in layers:
        a = rep.get("adaptation")
        if a:
            out.append(f"layer {rep['name']}: weight scale lowered by up to "
                       f"{a['w_frac_lowered']} step(s) to fit the {acc_bits}-bit accumulator: "
                       f"{100 * a['weights_changed']:.1f}% of weights changed "
                       f"({100 * a['weights_zeroed']:.1f}% zeroed), relative output error "
                       f"{a['rel_error']:.3g}")
    return out


def check_adaptation(layers: list[dict[str, Any]], acc_bits: int,
                     max_error: float = DEFAULT_MAX_ADAPT_ERROR) -> None:
    """Raise :class:`AdaptationError` naming the first layer whose ``rel_error`` exceeds
    ``max_error``."""
    if not (isinstance(max_error, (int, float)) and max_error >= 0
            and not math.isnan(max_error)):
        raise AdaptationError(f"--max-adapt-error must be >= 0, not {max_error!r}")
    for rep in layers:
        a = rep.get("adaptation")
        if a and not a["rel_error"] <= max_error:
            raise AdaptationError(
                f"layer {rep['name']}: fitting the {acc_bits}-bit accumulator changes its "
                f"output by {a['rel_error']:.3g} (relative error; "
                f"{100 * a['weights_zeroed']:.1f}% of weights zeroed), beyond the limit "
                f"{max_error:g} (--max-adapt-error; a wider acc_bits or a narrower layer "
                f"avoids it)")
