"""FloatNet -> integer IR: shift-code weights, power-of-two activation scales, bias at
accumulator scale, requantization shifts, accumulator proofs.

Rules (docs/frontend.md):

- **Activation scale** (``real = q * 2**-frac``): calibrated layer by layer on the calibration
  images, on the *integer* network built so far (so each scale sees the rounding of everything
  before it). For a tensor whose largest observed ``|real value|`` is ``m``, ``frac`` is the
  largest integer with ``m * 2**frac <= 127`` (:func:`act_frac`), i.e. ``floor(log2(127/m))``;
  it never exceeds ``min(acc_frac)`` of the producing layer (requantization shifts are >= 0).
- **Weights, post-training** (default for float layers): the folded float weights rounded to
  shift codes (``numerics.float_to_shift``, ``rounding="log"`` by default) with a
  per-output-channel power-of-two scale (largest ``|w|`` of a channel at the top exponent
  ``2**exp_bits - 1``), sequentially with error feedback (GPTQ-style, on the layer's
  calibration input: each rounding error is spread over the weights not yet rounded), then
  bias correction (the mean output error on the calibration input leaves the bias).
- **Weights, kept** (layers of a ``shiftbook compress`` model, or weights already exact powers
  of two; ``weights="auto"`` or ``"keep"``): the codes stay when the per-channel factors folded
  in since (batch norm, average pool) are powers of two: ``f = ±2**k`` (within
  ``GAIN_TOLERANCE``); the sign flips the codes' sign bits and ``2**k`` moves into ``w_frac``.
  A factor ``f = ±2**k * m`` with ``m != 1`` cannot be applied by a shift: ``"auto"`` then
  converts a shift layer post-training from its folded float weights (its codes change, it is
  still a shift layer), while a codebook layer (and every layer under ``"keep"``) keeps its
  codes with the bias divided by ``m``: the channel computes its exact output times ``1/m``
  (a gain error, reported as ``gain``; the ReLU's zero crossing stays exact). Compress a
  BN-folded model (``fold_batchnorm``) to keep every code exactly.
- **Codebook layers**: a kept codebook format is emitted on the IR op (``with_codebook``, the
  compiler then stores indices + codebook, ``WFMT = 1``) after checking that its decoded codes
  equal the op's codes and that the core can decode it (``max_k``, ``max_d``, block layout);
  otherwise (a negative or zero folded scale, an undecodable codebook) the op stays raw shift
  codes and ``Lowered.notes`` / the summary say why.
- **Bias** at accumulator scale ``2**-(in.frac + w_frac[o])``, rounded half up.
- **Residual** operands are aligned with ``res_shift[o] = acc_frac[o] - residual.frac``.
- **Accumulator**: ``numerics.check_acc_fits`` with the bias and the largest aligned residual
  added to the bound; a post-training layer that does not fit lowers the offending channels'
  ``w_frac`` one step at a time first. A kept format that does not fit is refused (the error
  names the layer).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from shiftbook import numerics as nx
from shiftbook.config import CoreConfig
from shiftbook.sw.ir import Conv2d, Graph, Linear, MaxPool2d, SumPool2d, TensorSpec, window_view
from shiftbook.weights import WeightFormatError

from .adaptation import measure_adaptation
from .errors import FrontendError
from .fast_acc import shift_conv_acc
from .fast_requant import acc_extremes, requantize_fused, saturated_fraction
from .gptq import GptqFactor, gptq_factor, gptq_round
from .lowered import Lowered
from .precheck import GAIN_TOLERANCE, core_codebook
from .scales import MAX_FRAC, act_frac, quantize_input
from .scales import round_half_up as _round_half_up
from .trace import FLayer, FloatNet

__all__ = ["act_frac", "quantize_input", "quantize_net", "Lowered", "WEIGHT_MODES",
           "ROUNDINGS"]

WEIGHT_MODES = ("auto", "keep", "ptq")
ROUNDINGS = ("linear", "log")


def mean_window(x: np.ndarray, kernel: tuple[int, ...], stride: tuple[int, int],
                padding: tuple[int, int, int, int]) -> np.ndarray:
    """``(C, KH, KW)``: the mean, over images and output pixels, of the input each kernel
    tap reads (padding: top, left, bottom, right; zeros outside). Summed over the images
    first (exact in float64 for integer inputs), then one strided slice per tap."""
    kh, kw = int(kernel[0]), int(kernel[1])
    sy, sx = stride
    t, left, b, r = padding
    xs = np.pad(np.asarray(x).sum(axis=0, dtype=np.float64), ((0, 0), (t, b), (left, r)))
    c, hp, wp = xs.shape
    oh, ow = (hp - kh) // sy + 1, (wp - kw) // sx + 1
    out = np.empty((c, kh, kw))
    for i in range(kh):
        for j in range(kw):
            out[:, i, j] = xs[:, i:i + sy * (oh - 1) + 1:sy, j:j + sx * (ow - 1) + 1:sx].sum(
                axis=(1, 2))
    return out / (x.shape[0] * oh * ow)


def _compact(a: np.ndarray) -> np.ndarray:
    """A calibration tensor stored as int8 when its values allow (activations are int8: an
    eighth of the int64 memory of a 32-image ResNet-50 calibration)."""
    a = np.asarray(a)
    if a.dtype != np.int8 and a.size and a.min() >= -128 and a.max() <= 127:
        return a.astype(np.int8)
    return a


def _last_reads(net: FloatNet) -> dict[int, list[str]]:
    """Per layer index, the tensors that no later layer reads (the network's outputs kept)."""
    last: dict[str, int] = {}
    for i, lay in enumerate(net.layers):
        for t in (lay.input, lay.residual):
            if t:
                last[t] = i
    out: dict[int, list[str]] = {}
    for t, i in last.items():
        if t not in net.outputs:
            out.setdefault(i, []).append(t)
    return out


def _res_bound(res_shift: np.ndarray) -> np.ndarray:
    """Largest |align_residual(r, s)| over int8 r."""
    return np.abs(np.asarray(nx.align_residual(-128, res_shift), dtype=np.int64))


class _Quantizer:
    def __init__(self, net: FloatNet, calib: torch.Tensor, cfg: CoreConfig, weights: str,
                 rounding: str, percentile: float, bias_correction: bool, gptq: bool) -> None:
        if weights not in WEIGHT_MODES:
            raise FrontendError(f"unknown weight mode {weights!r} ({', '.join(WEIGHT_MODES)})")
        if rounding not in ROUNDINGS:
            raise FrontendError(f"unknown rounding {rounding!r} ({', '.join(ROUNDINGS)})")
        if not 0 < percentile <= 100:
            raise FrontendError(f"calibration percentile {percentile} must be in (0, 100]")
        self.net, self.cfg = net, cfg
        self.weights, self.rounding, self.percentile = weights, rounding, percentile
        self.bias_correction = bias_correction
        self.gptq = gptq
        self.gptq_cache: dict[str, GptqFactor] = {}
        # (layer, codes, accumulators of those codes on the layer's calibration input): the
        # last two (a layer's final and unadapted codes)
        self.accs: list[tuple[str, np.ndarray, np.ndarray]] = []
        # ((layer, input frac), mean_window of its real calibration input): bias correction
        self.win_mean: tuple[Any, np.ndarray] = (None, np.zeros(0))
        self.eb = cfg.exp_bits
        self.emax = (1 << cfg.exp_bits) - 1
        self.limit = (1 << (cfg.acc_bits - 1)) - 1
        c = torch.as_tensor(calib).detach().to(torch.float64)
        if c.ndim == 3:
            c = c[None]
        if c.ndim != 4 or tuple(c.shape[1:]) != net.input_shape or c.shape[0] < 1:
            raise FrontendError(f"calibration images have shape {tuple(c.shape)}, the model "
                                f"takes (N, {', '.join(map(str, net.input_shape))})")
        self.calib = c
        self.graph = Graph(inputs=[net.input], outputs=list(net.outputs))
        self.env: dict[str, np.ndarray] = {}
        self.formats: dict[str, Any] = {}
        self.cb_pending: dict[str, tuple[Any, bool, bool]] = {}
        self.notes: list[str] = []
        self.report: list[dict[str, Any]] = []

    def top(self, v: np.ndarray) -> float:
        a = np.abs(np.asarray(v, dtype=np.float64))
        if a.size == 0:
            return 0.0
        if self.percentile >= 100:
            return float(a.max())
        return float(np.percentile(a, self.percentile))

    def input_frac(self) -> int:
        """The network input's scale: calibrated on the calibration images."""
        return act_frac(self.top(self.calib.numpy()))

    def run(self, progress: Callable[[int, int, str], None] | None = None) -> Graph:
        net = self.net
        f_in = self.input_frac()
        self.graph.add_tensor(TensorSpec(net.input, net.input_shape, f_in))
        self.env[net.input] = _compact(quantize_input(self.calib, f_in))
        last = _last_reads(net)
        for i, lay in enumerate(net.layers):
            if lay.kind in ("conv", "linear", "identity"):
                self.conv(lay)
            elif lay.kind == "maxpool":
                self.maxpool(lay)
            else:
                self.sumpool(lay)
            self.env[lay.output] = _compact(self.env[lay.output])
            for t in last.get(i, ()):       # no later layer reads it: free its memory
                self.env.pop(t, None)
            if progress is not None:
                progress(i + 1, len(net.layers), lay.name)
        self.graph.validate()
        return self.graph

    # ---- weights
    def ptq_codes(self, lay: FLayer, w_frac: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Post-training shift codes of a layer; ``w_frac`` None: the per-channel default."""
        w = lay.weight
        if w_frac is None:
            _, wf = nx.float_to_shift(w, self.eb, rounding=self.rounding, axis=0)
            wf = np.asarray(wf, dtype=np.int64).reshape(-1)
        else:
            wf = np.asarray(w_frac, dtype=np.int64)
        if not self.gptq:
            codes, _ = nx.float_to_shift(w, self.eb, rounding=self.rounding,
                                         w_frac=wf.reshape(-1, 1, 1, 1))
            return np.asarray(codes, dtype=np.int64), wf
        return self.gptq_codes(lay, wf), wf

    def gptq_codes(self, lay: FLayer, wf: np.ndarray) -> np.ndarray:
        """GPTQ-style sequential rounding onto the shift grid (:mod:`.gptq`), its input
        weighting computed once per layer on the layer's calibration input."""
        if lay.name not in self.gptq_cache:
            self.gptq_cache = {lay.name: self.gptq_factor(lay)}
        return gptq_round(lay.weight, wf, self.gptq_cache[lay.name], self.eb, self.rounding)

    def gptq_factor(self, lay: FLayer) -> GptqFactor:
        """:func:`.gptq.gptq_factor` of the layer's real-valued calibration input."""
        kernel = (lay.weight.shape[2], lay.weight.shape[3])
        return gptq_factor(self.env[lay.input], kernel, lay.stride, lay.padding,
                           2.0 ** -self.graph.tensors[lay.input].frac)

    def weights_of(self, lay: FLayer, in_frac: int, res_frac: int | None
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
        """codes, w_frac, real bias, gain m, source."""
        o = lay.weight.shape[0]
        ones = np.ones(o)
        if lay.kind == "identity":
            e = 0 if res_frac is None else int(np.clip(res_frac - in_frac, 0, self.emax))
            wf = np.full(o, e, np.int64)
            codes, _ = nx.float_to_shift(lay.weight, self.eb, w_frac=wf.reshape(-1, 1, 1, 1))
            return np.asarray(codes, np.int64), wf, lay.bias.copy(), ones, "identity"
        fx = lay.fixed
        if fx is not None and self.weights in ("auto", "keep"):
            f = fx.factor.astype(np.float64)
            dead = f == 0
            af = np.where(dead, 1.0, np.abs(f))
            k = np.round(np.log2(af)).astype(np.int64)
            m = af / np.exp2(k)
            inexact = bool(np.any(np.abs(m - 1.0) > GAIN_TOLERANCE))
            codebook = fx.fmt is not None and getattr(fx.fmt, "kind", "") == "codebook"
            if self.weights == "auto" and inexact and not codebook:
                codes, wf = self.ptq_codes(lay, None)
                return codes, wf, lay.bias.copy(), ones, "ptq"
            zero, sign, e = nx.shift_fields(fx.codes, self.eb)
            sign = np.where((f < 0).reshape(-1, 1, 1, 1), 1 - sign, sign)
            zero = np.where(dead.reshape(-1, 1, 1, 1), 1, zero)
            codes = np.asarray(nx.encode_shift(zero, sign, np.where(zero != 0, 0, e), self.eb),
                               dtype=np.int64)
            wf = fx.w_frac.astype(np.int64) - k
            src = "format" if fx.fmt is not None else "detected"
            if codebook:
                self.cb_pending[lay.name] = (fx.fmt, bool(np.any(f < 0)), bool(np.any(dead)))
            return codes, wf, lay.bias / m, m, src
        codes, wf = self.ptq_codes(lay, None)
        return codes, wf, lay.bias.copy(), ones, "ptq"

    def attach_codebook(self, op: Conv2d) -> str:
        """Emit a kept codebook format on ``op`` (``with_codebook``: the compiler stores it as
        ``WFMT = 1``) when folding left its codes unchanged and the core can decode it; else
        the op stays raw shift codes and a note says why. Returns the op's weight format
        (``"shift"`` or ``"codebook k=K d=D"``)."""
        pend = self.cb_pending.pop(op.name, None)
        if pend is None:
            return "shift"
        rec, flipped, dead = pend
        if not flipped:     # the codes are kept per weight (even if not as a codebook)
            self.formats[op.name] = rec
        why = None
        cbw = None
        try:
            # the codes as the core sees them (exp_bits of the CoreConfig, as the weights)
            cbw = core_codebook(rec, self.cfg, f"layer {op.name!r}")
        except (WeightFormatError, ValueError) as e:
            why = str(e)
        if why is None and flipped:
            why = "a negative folded batch-norm scale flips code signs"
        elif why is None and dead:
            why = "a zero folded batch-norm scale zeroes a channel"
        if why is None and cbw is not None:
            dec = cbw.decode().reshape(op.weight.shape)
            if not np.array_equal(dec, op.weight):
                why = "folding changed the codes"
        if why is not None or cbw is None:
            self.notes.append(f"layer {op.name}: codebook format not kept ({why}); "
                              f"compiled as shift codes")
            return "shift"
        op.with_codebook(cbw)
        if not np.array_equal(op.weight, cbw.decode().reshape(op.weight.shape)):
            raise FrontendError(f"layer {op.name}: decoded codebook differs from its codes")
        return f"codebook k={cbw.k} d={cbw.d}"

    def bias_error(self, lay: FLayer, codes: np.ndarray, wf: np.ndarray,
                   in_frac: int) -> np.ndarray:
        """Per output channel, the mean of (shift-weight conv - float conv) on the layer's
        calibration input: subtracted from the bias (bias correction). The convolution is
        linear, so that mean is the weight error contracted with the mean input window
        (:func:`mean_window`): no convolution at all, the same value up to float rounding."""
        o = codes.shape[0]
        wq = nx.decode_shift(codes, self.eb) * np.exp2(-wf.astype(np.float64)).reshape(
            o, 1, 1, 1)
        key = (lay.name, in_frac)
        if self.win_mean[0] != key:
            self.win_mean = (key, mean_window(self.env[lay.input], lay.weight.shape[2:],
                                              lay.stride, lay.padding) * 2.0**-in_frac)
        dw = (wq - lay.weight.astype(np.float64)).reshape(o, -1)
        return dw @ self.win_mean[1].reshape(-1)

    def conv(self, lay: FLayer) -> None:
        """Lower a conv/linear/identity layer: weights, accumulator fit, bias, op, output
        scale calibrated on the integer network, and its report."""
        g = self.graph
        in_frac = g.tensors[lay.input].frac
        res_frac = g.tensors[lay.residual].frac if lay.residual else None
        codes, wf, bias_real, gain, src = self.weights_of(lay, in_frac, res_frac)
        o = codes.shape[0]
        zero_ch = np.all(nx.shift_fields(codes, self.eb)[0].reshape(o, -1) != 0, axis=1)
        if zero_ch.any():
            live = wf[~zero_ch]
            wf = wf.copy()
            wf[zero_ch] = int(live.max()) if live.size else 0
        adjustable = np.full(o, src in ("ptq", "identity")) | zero_ch
        codes0, wf0 = codes, wf.copy()      # the unadapted layer (measured against below)
        codes, wf = self.fit_accumulator(lay, codes, wf, bias_real, src, adjustable, in_frac,
                                         res_frac)
        bias_real0 = bias_real
        if self.bias_correction and src == "ptq":
            bias_real = bias_real - self.bias_error(lay, codes, wf, in_frac)
        bias, res_shift, bound = self.checked_bias(lay, codes, wf, bias_real, in_frac, res_frac)
        kind = Linear if lay.kind == "linear" else Conv2d
        op = kind(lay.name, lay.input, lay.output,
                  weight=codes[:, :, 0, 0] if kind is Linear else codes, exp_bits=self.eb,
                  bias=bias, shift=np.zeros(o, np.int64), w_frac=wf, relu=lay.relu,
                  stride=lay.stride, padding=lay.padding, residual=lay.residual,
                  res_shift=res_shift)
        wfmt = self.attach_codebook(op)
        adapted = self.adaptation(lay, (codes0, wf0, bias_real0), (codes, wf, bias), in_frac,
                                  corrected=self.bias_correction and src == "ptq")
        out_frac, saturated = self.calibrate_output(lay, op, in_frac)
        bound_max = int(np.max(bound)) if bound.size else 0
        self.report.append({
            "name": lay.name, "kind": op.kind, "weights": src, "in_frac": in_frac,
            "out_frac": out_frac, "w_frac": [int(wf.min()), int(wf.max())],
            "shift": [int(op.shift.min()), int(op.shift.max())],
            "acc_bound": bound_max, "acc_headroom_bits": round(
                math.log2(self.limit / max(1, bound_max)), 2),
            "gain": [round(float(gain.min()), 4), round(float(gain.max()), 4)],
            "relu": lay.relu, "residual": lay.residual, "bn": lay.bn, "wfmt": wfmt,
            "saturated": saturated,
            **({"adaptation": adapted} if adapted else {}),
        })

    def fit_accumulator(self, lay: FLayer, codes: np.ndarray, wf: np.ndarray,
                        bias_real: np.ndarray, src: str, adjustable: np.ndarray, in_frac: int,
                        res_frac: int | None) -> tuple[np.ndarray, np.ndarray]:
        """Lower the ``w_frac`` of the ``adjustable`` channels whose accumulator bound (bias
        and aligned residual included) or bias overflows, re-deriving their codes, until
        every channel fits or an overflowing channel cannot be adjusted (then
        :meth:`checked_bias` refuses the layer). Returns (codes, w_frac)."""
        o = codes.shape[0]
        for _ in range(4 * MAX_FRAC):
            w_int = np.asarray(nx.decode_shift(codes, self.eb), dtype=np.int64)
            acc_frac = in_frac + wf
            bias = _round_half_up(bias_real * np.exp2(acc_frac.astype(np.float64)))
            extra = np.abs(bias)
            res_shift = np.zeros(o, np.int64)
            if lay.residual:
                res_shift = acc_frac - res_frac
                extra = extra + _res_bound(res_shift)
            bound = nx.acc_bound(w_int, extra, act_bits=self.cfg.act_bits)
            bad = (bound > self.limit) | (np.abs(bias) > (1 << 31) - 1)
            if not bad.any() or not (bad & adjustable).any() or (bad & ~adjustable).any():
                break
            # halving a channel's scale roughly halves its bound: jump most of the way at once
            step = np.ceil(np.log2(np.maximum(bound, 1) / self.limit)).astype(np.int64)
            wf = wf - np.where(bad & adjustable, np.maximum(step, 1), 0)
            if src == "ptq":
                codes, _ = self.ptq_codes(lay, wf)
            elif src == "identity":
                codes, _ = nx.float_to_shift(lay.weight, self.eb, w_frac=wf.reshape(-1, 1, 1, 1))
                codes = np.asarray(codes, np.int64)
        return codes, wf

    def checked_bias(self, lay: FLayer, codes: np.ndarray, wf: np.ndarray,
                     bias_real: np.ndarray, in_frac: int, res_frac: int | None
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The layer's integer bias and residual alignment shifts, after proving that its
        accumulator, bias and alignment fit (else :class:`FrontendError` naming the layer).
        Returns (bias, res_shift, accumulator bound per channel)."""
        o = codes.shape[0]
        w_int = np.asarray(nx.decode_shift(codes, self.eb), dtype=np.int64)
        acc_frac = in_frac + wf
        bias = _round_half_up(bias_real * np.exp2(acc_frac.astype(np.float64)))
        res_shift = acc_frac - res_frac if lay.residual else np.zeros(o, np.int64)
        extra = np.abs(bias) + (_res_bound(res_shift) if lay.residual else 0)
        bound = nx.acc_bound(w_int, extra, act_bits=self.cfg.act_bits)
        what = f"layer {lay.name!r} ({lay.where})"
        nx.check_acc_fits(w_int, extra, acc_bits=self.cfg.acc_bits, act_bits=self.cfg.act_bits,
                          what=what)
        if np.any(np.abs(bias) > (1 << 31) - 1):
            raise FrontendError(f"{what}: bias {int(np.abs(bias).max())} does not fit the "
                                f"32-bit bias field")
        if lay.residual and (res_shift.min() < -128 or res_shift.max() > 127):
            raise FrontendError(f"{what}: residual alignment shift {int(res_shift.max())} "
                                f"outside int8")
        return bias, res_shift, bound

    def layer_acc(self, lay: FLayer, codes: np.ndarray) -> np.ndarray:
        """Accumulators of ``codes`` (shift codes, ``(O, I, KH, KW)``) on the layer's
        calibration input. The last two results are kept: bias correction, the adaptation
        measure and the output calibration of a layer convolve the same two sets of codes."""
        for name, seen, raw in self.accs:
            if name == lay.name and seen.shape == codes.shape and np.array_equal(seen, codes):
                return raw
        probe = Conv2d(lay.name, lay.input, lay.output, weight=codes, exp_bits=self.eb,
                       stride=lay.stride, padding=lay.padding)
        raw = shift_conv_acc(self.env[lay.input], probe)
        self.accs = [*self.accs[-1:], (lay.name, codes, raw)]
        return raw

    def calibrate_output(self, lay: FLayer, op: Conv2d, in_frac: int
                         ) -> tuple[int, float]:
        """Calibrate the output scale of ``op`` on the integer network built so far: set its
        requantization shift, add its output tensor and the op to the graph and compute its
        integer output on the calibration images. Returns (output frac, fraction of
        calibration outputs that saturate)."""
        o = op.out_channels
        acc_frac = in_frac + op.w_frac
        bias, res_shift = op.bias.reshape(1, o, 1, 1), op.res_shift.reshape(1, o, 1, 1)
        res = self.env[lay.residual] if lay.residual else None
        raw = self.layer_acc(lay, op.weight)
        self.accs = []
        rs = op.res_shift if res is not None else None
        scale = np.exp2(-acc_frac.astype(np.float64))
        if self.percentile >= 100 and raw.size:
            # the largest |real output| from per-channel extremes (exact: a power-of-two
            # scale times an integer below 2**53), without the real tensor
            hi, lo = acc_extremes(raw, op.bias, res, rs)
            top = float(np.max(np.maximum(hi, 0) * scale if lay.relu
                               else np.maximum(hi * scale, -lo * scale)))
        else:
            acc = raw + bias
            if res is not None:
                acc = acc + nx.align_residual(res, res_shift)
            real = acc * scale.reshape(1, o, 1, 1)
            top = self.top(np.maximum(real, 0.0) if lay.relu else real)
        cap = int(acc_frac.min())
        out_frac = act_frac(top, cap) if top > 0 else min(cap, in_frac)
        op.shift = np.minimum(acc_frac - out_frac, self.cfg.acc_bits).astype(np.int64)
        self.graph.add_tensor(TensorSpec(lay.output, lay.out_shape, out_frac))
        self.graph.add_op(op)
        self.env[lay.output] = requantize_fused(raw, op.bias, op.shift, relu=lay.relu,
                                                residual=res, res_shift=rs)
        return out_frac, saturated_fraction(raw, op.bias, scale * 2.0**out_frac,
                                            relu=lay.relu, residual=res, res_shift=rs)

    def adaptation(self, lay: FLayer, before: tuple[np.ndarray, np.ndarray, np.ndarray],
                   after: tuple[np.ndarray, np.ndarray, np.ndarray], in_frac: int, *,
                   corrected: bool) -> dict[str, Any] | None:
        """What lowering ``w_frac`` to fit the accumulator changed (:mod:`.adaptation`), or
        None when nothing was lowered. ``before``: unadapted (codes, w_frac, real bias before
        bias correction); ``after``: the layer's (codes, w_frac, integer bias); ``corrected``:
        the layer's bias was bias-corrected (so is the unadapted one's, on its own codes)."""
        codes0, wf0, bias_real0 = before
        if np.array_equal(wf0, after[1]):
            return None
        if corrected:
            bias_real0 = bias_real0 - self.bias_error(lay, codes0, wf0, in_frac)
        b0 = _round_half_up(bias_real0 * np.exp2((in_frac + wf0).astype(np.float64)))
        accs = (self.layer_acc(lay, codes0), self.layer_acc(lay, after[0]))
        return measure_adaptation(self.env[lay.input], (codes0, wf0, b0), after,
                                  in_frac=in_frac, exp_bits=self.eb, stride=lay.stride,
                                  padding=lay.padding, accs=accs)

    def maxpool(self, lay: FLayer) -> None:
        g = self.graph
        f = g.tensors[lay.input].frac
        op = MaxPool2d(lay.name, lay.input, lay.output, kernel=lay.kernel, stride=lay.stride,
                       padding=lay.padding)
        g.add_tensor(TensorSpec(lay.output, lay.out_shape, f))
        g.add_op(op)
        self.env[lay.output] = op.run(self.env[lay.input])
        self.report.append({"name": lay.name, "kind": op.kind, "in_frac": f, "out_frac": f})

    def sumpool(self, lay: FLayer) -> None:
        g = self.graph
        f = g.tensors[lay.input].frac
        probe = SumPool2d(lay.name, lay.input, lay.output, kernel=lay.kernel,
                          stride=lay.stride, padding=lay.padding, shift=0)

        sums = window_view(self.env[lay.input], probe.kernel, probe.stride, probe.padding,
                        0).sum(axis=(-2, -1))
        top = self.top(sums * 2.0**-f)
        out_frac = act_frac(top, f) if top > 0 else f
        probe.shift = f - out_frac
        g.add_tensor(TensorSpec(lay.output, lay.out_shape, out_frac))
        g.add_op(probe)
        self.env[lay.output] = probe.run(self.env[lay.input])
        self.report.append({"name": lay.name, "kind": probe.kind, "in_frac": f,
                            "out_frac": out_frac, "shift": [probe.shift, probe.shift]})


def quantize_net(net: FloatNet, calib: Any, config: CoreConfig, *, weights: str = "auto",
                 rounding: str = "log", percentile: float = 100.0,
                 bias_correction: bool = True, gptq: bool = True,
                 progress: Callable[[int, int, str], None] | None = None) -> Lowered:
    """Quantize a :class:`FloatNet` on float calibration images ``calib`` ``(N, C, H, W)``;
    ``progress(done, total, layer)`` after each layer (e.g. a progress bar)."""
    q = _Quantizer(net, calib, config, weights, rounding, percentile, bias_correction, gptq)
    graph = q.run(progress)
    return Lowered(graph, net, config, q.formats, q.report, q.notes)
