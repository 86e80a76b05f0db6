"""Quantize an :class:`~.onnx_import.OnnxSource` into the integer IR, honouring the activation
scales its quantizers fix, and check the result against the model's own executor.

The quantizer is the frontend's (:mod:`.quantize`) with one difference: a tensor whose scale a
QONNX ``Quant`` fixes (``OnnxSource.fracs``) takes that scale instead of a calibrated one, as
long as the core can produce it (a requantization shift >= 0; else a note and the calibrated
scale). The reference check runs the ONNX model (onnxruntime for plain ONNX, qonnx's executor
for QONNX) on sample images and compares its outputs with the golden IR's
(``sw/reference.run_graph``), reported as one note line.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from shiftbook.config import CoreConfig
from shiftbook.sw.ir import SumPool2d, TensorSpec

from .errors import FrontendError
from .fast_requant import requantize_fused
from .lowered import Lowered
from .onnx_import import OnnxSource
from .quantize import _Quantizer

__all__ = ["lower_onnx", "reference_check", "REF_IMAGES"]

#: Sample images the reference check runs through the ONNX executor.
REF_IMAGES = 8


class _FixedQuantizer(_Quantizer):
    """The frontend's quantizer with the activation scales of a QONNX model fixed."""

    fixed: dict[str, int]

    def input_frac(self) -> int:
        f = self.fixed.get(self.net.input)
        return super().input_frac() if f is None else f

    def maxpool(self, lay: Any) -> None:
        super().maxpool(lay)
        f = self.fixed.get(lay.output)
        if f is not None and f != self.graph.tensors[lay.output].frac:
            self.notes.append(f"tensor {lay.output}: a max pool keeps its input's "
                              f"scale, not the quantizer's 2^-{f}")

    def calibrate_output(self, lay: Any, op: Any, in_frac: int) -> tuple[int, float]:
        f = self.fixed.get(lay.output)
        cap = int((in_frac + op.w_frac).min())
        if f is None or f > cap:
            if f is not None:
                self.notes.append(f"layer {lay.name}: quantizer scale 2^-{f} is finer than its "
                                  f"accumulator's 2^-{cap}; calibrated instead")
            return super().calibrate_output(lay, op, in_frac)
        acc_frac = in_frac + op.w_frac
        res = self.env[lay.residual] if lay.residual else None
        raw = self.layer_acc(lay, op.weight)
        self.accs = []
        op.shift = np.minimum(acc_frac - f, self.cfg.acc_bits).astype(np.int64)
        self.graph.add_tensor(TensorSpec(lay.output, lay.out_shape, f))
        self.graph.add_op(op)
        out = requantize_fused(raw, op.bias, op.shift, relu=lay.relu, residual=res,
                               res_shift=op.res_shift if res is not None else None)
        self.env[lay.output] = out
        return f, float(np.mean((out == 127) | (out == -128)))

    def sumpool(self, lay: Any) -> None:
        f = self.fixed.get(lay.output)
        fin = self.graph.tensors[lay.input].frac
        if f is None or f > fin:
            return super().sumpool(lay)
        op = SumPool2d(lay.name, lay.input, lay.output, kernel=lay.kernel, stride=lay.stride,
                       padding=lay.padding, shift=fin - f)
        self.graph.add_tensor(TensorSpec(lay.output, lay.out_shape, f))
        self.graph.add_op(op)
        self.env[lay.output] = op.run(self.env[lay.input])
        self.report.append({"name": lay.name, "kind": op.kind, "in_frac": fin, "out_frac": f,
                            "shift": [op.shift, op.shift]})


def _weight_errors(src: OnnxSource, low: Lowered) -> list[str]:
    """One line per post-training converted layer: its relative weight error."""
    lines = []
    ops = {op.name: op for op in low.graph.ops}
    for lay in src.net.layers:
        op = ops.get(lay.name)
        if op is None or lay.name not in src.converted:
            continue
        w = op.values().astype(np.float64)
        w = w.reshape(lay.weight.shape) * np.exp2(-op.w_frac.astype(np.float64)).reshape(
            -1, 1, 1, 1)
        ref = lay.weight
        err = float(np.linalg.norm(w - ref) / max(np.linalg.norm(ref), 1e-30))
        lines.append(f"layer {lay.name}: post-training shift conversion, relative weight "
                     f"error {100 * err:.2f}%")
    return lines


def lower_onnx(src: OnnxSource, calib: Any, config: CoreConfig, *, weights: str = "auto",
               rounding: str = "log", percentile: float = 100.0, bias_correction: bool = True,
               gptq: bool = True, check: bool = True, progress: Any = None) -> Lowered:
    """Quantize ``src`` on float calibration images ``calib``; with ``check`` the reference
    check's line is added to the notes."""
    src.float_net(config.exp_bits)      # kept shift codes are per exp_bits
    q = _FixedQuantizer(src.net, calib, config, weights, rounding, percentile,
                        bias_correction, gptq)
    q.fixed = dict(src.fracs)
    graph = q.run(progress)
    low = Lowered(graph, src.net, config, q.formats, q.report,
                  list(src.notes) + q.notes)
    low.notes += _weight_errors(src, low)
    if check:
        low.notes.append(reference_check(src, low, calib[:REF_IMAGES]))
    return low


def run_reference(src: OnnxSource, x: np.ndarray) -> np.ndarray:
    """The ONNX model's first output for float images ``x`` ``(N, C, H, W)``, one image at a
    time (qonnx's executor for QONNX, onnxruntime otherwise), as float64 ``(N, -1)``. A model
    the executor refuses (an invalid attribute, a graph it cannot build) is one
    :class:`FrontendError` line."""
    try:
        return _run_reference(src, x)
    except FrontendError:
        raise
    except Exception as e:  # noqa: BLE001 - onnxruntime / qonnx errors on a malformed model
        who = "qonnx's executor" if src.qonnx else "onnxruntime"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise FrontendError(f"{src.path}: the ONNX model does not run in {who} ({first})") \
            from None


def _run_reference(src: OnnxSource, x: np.ndarray) -> np.ndarray:
    name = src.model.graph.input[0].name
    outs = []
    if src.qonnx:
        from qonnx.core.onnx_exec import execute_onnx

        oname = src.model.graph.output[0].name
        for i in range(x.shape[0]):
            r = execute_onnx(src.model, {name: x[i:i + 1].astype(np.float32)})
            outs.append(np.asarray(r[oname], np.float64).reshape(1, -1))
    else:
        import onnxruntime as ort

        sess = ort.InferenceSession(src.model.model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        for i in range(x.shape[0]):
            r = sess.run(None, {name: x[i:i + 1].astype(np.float32)})
            outs.append(np.asarray(r[0], np.float64).reshape(1, -1))
    return np.concatenate(outs)


def compare_reference(src: OnnxSource, low: Lowered, x: Any) -> dict[str, Any]:
    """The ONNX executor's and the golden IR's outputs on ``x``: equality, largest error,
    top-1 agreement."""
    xs = torch.as_tensor(x).detach().to(torch.float64).numpy()
    ref = run_reference(src, xs)
    got = low.logits(xs)
    diff = np.abs(ref - got)
    rng = float(np.abs(ref).max()) or 1.0
    return {"images": int(xs.shape[0]), "exact": bool(np.array_equal(ref, got)),
            "max_abs_error": float(diff.max()), "max_rel_error": float(diff.max()) / rng,
            "top1": int(np.sum(ref.argmax(1) == got.argmax(1))), "ref": ref, "got": got}


def reference_check(src: OnnxSource, low: Lowered, x: Any) -> str:
    """One line: how the golden IR agrees with the ONNX model's executor on ``x``."""
    r = compare_reference(src, low, x)
    who = "qonnx executor" if src.qonnx else "onnxruntime"
    if r["exact"]:
        return (f"reference check ({who}, {r['images']} image(s)): exact, every output "
                f"equal")
    return (f"reference check ({who}, {r['images']} image(s)): largest error "
            f"{r['max_abs_error']:.4g} ({100 * r['max_rel_error']:.2f}% of the output range), "
            f"top-1 agreement {r['top1']}/{r['images']}")
