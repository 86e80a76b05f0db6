"""The QONNX quantizers as facts for the frontend (docs/frontend.md, "ONNX and QONNX").

- A weight ``Quant`` / ``BipolarQuant`` (all inputs constant) is evaluated with qonnx's own
  ``int_quant``; when its integers are ``0`` or ``±2**k`` and its scale (per tensor or per
  output channel) is a power of two, the layer keeps those values as shift codes exactly
  (:func:`fixed_weights`); otherwise the layer goes through the post-training conversion and its
  weight error is reported.
- An activation ``Quant`` / ``Trunc`` gives the IR tensor's scale when the core can honour it
  exactly (:func:`act_quant`): a power-of-two scale, zero point 0, a range that is the core's
  int8 saturation (signed 8-bit, or unsigned 7-bit after a ReLU). Anything else (another scale,
  a zero point, a wider or narrower range) is *converted*: the tensor's scale is calibrated as
  for a float model, and a note names the node and why; the reference check then reports the
  error it causes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftbook import numerics as nx

from .errors import FrontendError
from .float_net import FixedWeights

__all__ = ["QUANT_OPS", "WeightQuant", "ActQuant", "weight_quant", "act_quant",
           "fixed_weights", "pow2_exponent"]

QUANT_OPS = ("Quant", "BipolarQuant", "Trunc")


def pow2_exponent(v: Any) -> np.ndarray | None:
    """``log2`` of ``v`` (array) if every element is a positive power of two, else None."""
    a = np.asarray(v, dtype=np.float64)
    if a.size == 0 or not np.all(np.isfinite(a)) or not np.all(a > 0):
        return None
    mant, ex = np.frexp(a)
    if not np.all(mant == 0.5):
        return None
    return (ex - 1).astype(np.int64)


@dataclass
class WeightQuant:
    """A weight quantizer's facts: the integers, the scale (broadcastable), bit width, and
    the node (for notes)."""

    ints: np.ndarray
    scale: np.ndarray
    bits: float
    node: str
    op: str

    def describe(self) -> str:
        s = np.unique(self.scale)
        sc = f"scale {float(s[0]):.4g}" if s.size == 1 else f"{s.size} channel scales"
        return f"{self.op} '{self.node}' ({self.bits:g}-bit, {sc})"


def _inputs(node: Any, consts: dict[str, np.ndarray]) -> list[np.ndarray | None]:
    return [consts.get(i) if i else None for i in node.input]


def _attrs(node: Any) -> dict[str, Any]:
    import onnx

    out = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    return {k: v.decode() if isinstance(v, bytes) else v for k, v in out.items()}


def weight_quant(node: Any, consts: dict[str, np.ndarray], where: str
                 ) -> tuple[np.ndarray, WeightQuant]:
    """Evaluate a constant ``Quant``/``BipolarQuant``: (dequantized weights, facts)."""
    ins = _inputs(node, consts)
    at = _attrs(node)
    x = np.asarray(ins[0], dtype=np.float64)
    scale = np.asarray(ins[1], dtype=np.float64)
    if node.op_type == "BipolarQuant":
        ints = np.where(x / scale >= 0, 1.0, -1.0)
        return ints * scale, WeightQuant(ints, scale, 1, node.name, node.op_type)
    if node.op_type != "Quant":
        raise FrontendError(f"unsupported ONNX {where}: a Trunc on constant weights")
    from qonnx.custom_op.general.intquant import int_quant

    zp, bits = np.asarray(ins[2], np.float64), float(np.asarray(ins[3]))
    if np.any(zp != 0):
        raise FrontendError(f"unsupported ONNX {where}: weight zero point {zp.ravel()[:4]} "
                            f"(the core's weights are symmetric)")
    q = int_quant(x, scale, zp, np.float64(bits), int(at.get("signed", 1)),
                  int(at.get("narrow", 0)), str(at.get("rounding_mode", "ROUND")))
    ints = np.round(q / scale)
    return ints * scale, WeightQuant(ints, scale, bits, node.name, node.op_type)


def fixed_weights(w: np.ndarray, wq: WeightQuant | None, exp_bits: int,
                  factor: np.ndarray) -> FixedWeights | None:
    """Shift codes kept exactly for a layer's weights ``w`` (``(O, I, KH, KW)``): from the
    quantizer's power-of-two integers and scale when it has them (its ``w_frac`` kept), else
    from ``w`` when it is exactly ``±2**k`` (:func:`~.float_net.detect_shift`); None when
    neither holds (post-training conversion)."""
    from .float_net import detect_shift

    o = w.shape[0]
    emax = (1 << exp_bits) - 1
    sc = None if wq is None else np.asarray(wq.scale, np.float64).ravel()
    if sc is not None and sc.size in (1, o):
        e_sc = pow2_exponent(sc)
        nz = np.abs(wq.ints[wq.ints != 0])
        e_int = pow2_exponent(nz) if nz.size else np.zeros(0, np.int64)
        if e_sc is not None and e_int is not None and (e_int.size == 0
                                                       or int(e_int.max()) <= emax):
            wf = np.broadcast_to(-e_sc, (o,)).astype(np.int64)
            codes, _ = nx.float_to_shift(w, exp_bits, w_frac=wf.reshape(-1, 1, 1, 1))
            back = nx.decode_shift(codes, exp_bits) * np.exp2(-wf.astype(np.float64)).reshape(
                -1, 1, 1, 1)
            if np.array_equal(back, w):
                return FixedWeights(np.asarray(codes, np.int64), exp_bits, wf, factor, None)
    got = detect_shift(w, exp_bits)
    if got is None:
        return None
    codes, wf = got
    return FixedWeights(codes.reshape(w.shape), exp_bits, wf, factor, None)


@dataclass
class ActQuant:
    """An activation quantizer: ``frac`` the IR scale it fixes (None: converted, the scale is
    calibrated), ``why`` what the core does not honour exactly ('' when exact)."""

    frac: int | None
    why: str


def act_quant(node: Any, consts: dict[str, np.ndarray], where: str, nonneg: bool
              ) -> ActQuant:
    """Read an activation ``Quant``/``Trunc``/``BipolarQuant`` (``nonneg``: its input is a
    ReLU's output). Refuses (one line, naming the node) a quantizer whose parameters are not
    constants or an activation ``BipolarQuant`` (the core has no sign activation)."""
    op = node.op_type
    if op == "BipolarQuant":
        raise FrontendError(f"unsupported ONNX {where}: a BipolarQuant on activations (the "
                            f"core's activations are int8, it has no sign activation)")
    for i in node.input[1:]:
        if i and i not in consts:
            raise FrontendError(f"unsupported ONNX {where}: quantizer parameter {i!r} is not "
                                f"a constant")
    ins = _inputs(node, consts)
    at = _attrs(node)
    if op == "Trunc":       # inputs: x, scale, zeropt, in_bits, out_scale, out_bits
        scale, zp, bits = ins[4], ins[2], float(np.asarray(ins[5]))
        signed, narrow = int(at.get("signed", 1)), int(at.get("narrow", 0))
        rounding = str(at.get("rounding_mode", "FLOOR")).upper()
    else:
        scale, zp, bits = ins[1], ins[2], float(np.asarray(ins[3]))
        signed, narrow = int(at.get("signed", 1)), int(at.get("narrow", 0))
        rounding = str(at.get("rounding_mode", "ROUND")).upper()
    s = np.asarray(scale, np.float64)
    e = pow2_exponent(s)
    whys = []
    if s.size != 1:
        whys.append("a per-channel activation scale (the core has one per tensor)")
    elif e is None:
        whys.append(f"scale {float(s.ravel()[0]):.6g} is not a power of two")
    if np.any(np.asarray(zp) != 0):
        whys.append("an asymmetric zero point")
    if bits > 8 or bits != math.floor(bits):
        whys.append(f"bit width {bits:g} (the core's activations are 8-bit)")
    wide = False
    if not whys and not signed and bits == 8:
        whys.append("range of an unsigned 8-bit quantizer [0, 255] (the core saturates to "
                    "[-128, 127]; unsigned 7-bit after a ReLU is exact)")
        wide = True
    elif not whys and (bits < 8 if signed else bits < 7) or (signed and narrow and not nonneg):
        whys.append(f"range of a {'narrow ' if narrow else ''}{bits:g}-bit "
                    f"{'signed' if signed else 'unsigned'} quantizer (the core saturates to "
                    f"[-128, 127])")
    if not signed and not nonneg:
        whys.append("an unsigned quantizer without a ReLU before it clips negative values")
    if wide or s.size != 1 or e is None or bits > 8 or np.any(np.asarray(zp) != 0):
        return ActQuant(None, "; ".join(whys))
    frac = -int(e.ravel()[0]) if e is not None and s.size == 1 else None
    if rounding not in ("HALF_UP",) or (rounding == "HALF_UP" and not nonneg):
        whys.append(f"rounding {rounding} (the core rounds half up, toward +inf: ties may "
                    f"differ)" if rounding != "HALF_UP" else
                    "rounding HALF_UP of negative values (the core rounds ties toward +inf)")
    return ActQuant(frac, "; ".join(whys))
