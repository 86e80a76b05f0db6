"""The QONNX quantizer rules (sw/frontend/onnx_quant.py) on single nodes: what is kept exactly,
what is converted with a reason, what is refused."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import helper

from shiftbook.sw.frontend import FrontendError
from shiftbook.sw.frontend.onnx_quant import act_quant, fixed_weights, weight_quant


def _consts(scale: float, zp: float = 0.0, bits: float = 8.0) -> dict[str, np.ndarray]:
    return {"s": np.float32(scale), "z": np.float32(zp), "b": np.float32(bits)}


def _quant(signed: int = 1, narrow: int = 0, rounding: str = "HALF_UP"):
    return helper.make_node("Quant", ["x", "s", "z", "b"], ["y"], name="q", signed=signed,
                            narrow=narrow, rounding_mode=rounding)


def test_exact_activation_quantizers_fix_the_scale():
    assert act_quant(_quant(), _consts(2.0**-5), "q", nonneg=True).frac == 5
    q = act_quant(_quant(signed=0), _consts(2.0**-3, bits=7), "q", nonneg=True)
    assert (q.frac, q.why) == (3, "")


@pytest.mark.parametrize("consts,signed,why,frac", [
    (_consts(0.1), 1, "scale 0.1 is not a power of two", None),
    (_consts(2.0**-4, zp=3.0), 1, "an asymmetric zero point", None),
    (_consts(2.0**-4, bits=10), 1, "bit width 10", None),
    (_consts(2.0**-4, bits=8), 0, "unsigned 8-bit quantizer [0, 255]", None),
    (_consts(2.0**-4, bits=4), 1, "range of a 4-bit signed quantizer", 4),
])
def test_what_the_core_cannot_honour_is_converted_with_a_reason(consts, signed, why, frac):
    q = act_quant(_quant(signed=signed), consts, "q", nonneg=True)
    assert why in q.why and q.frac == frac


def test_round_half_even_is_noted():
    q = act_quant(_quant(rounding="ROUND"), _consts(2.0**-5), "q", nonneg=True)
    assert q.frac == 5 and "rounding ROUND" in q.why


def test_trunc_reads_its_output_scale():
    node = helper.make_node("Trunc", ["x", "s", "z", "ib", "os", "ob"], ["y"], name="t",
                            rounding_mode="FLOOR")
    c = {"s": np.float32(2.0**-6), "z": np.float32(0), "ib": np.float32(12),
         "os": np.float32(2.0**-3), "ob": np.float32(8)}
    q = act_quant(node, c, "t", nonneg=True)
    assert q.frac == 3 and "rounding FLOOR" in q.why


def test_activation_bipolar_quant_is_refused():
    node = helper.make_node("BipolarQuant", ["x", "s"], ["y"], name="sign")
    with pytest.raises(FrontendError, match="BipolarQuant on activations"):
        act_quant(node, {"s": np.float32(1.0)}, "node 'sign'", nonneg=False)


def test_bipolar_weights_are_exact_shift_codes():
    w = np.array([0.3, -0.2, 0.0, -1.0], np.float32).reshape(1, 4, 1, 1)
    node = helper.make_node("BipolarQuant", ["w", "s"], ["wq"], name="bq")
    real, wq = weight_quant(node, {"w": w, "s": np.float32(0.25)}, "bq")
    assert np.array_equal(real.ravel(), [0.25, -0.25, 0.25, -0.25])
    fx = fixed_weights(real, wq, 4, np.ones(1))
    assert fx is not None and np.array_equal(fx.real(), real) and list(fx.w_frac) == [2]


def test_weight_quant_with_odd_integers_is_not_kept():
    w = np.array([3, 1, -2, 0], np.float32).reshape(1, 4, 1, 1) * 2.0**-4
    real, wq = weight_quant(_quant(rounding="ROUND"), {"x": w, **_consts(2.0**-4, bits=4)},
                            "q")
    assert fixed_weights(real, wq, 4, np.ones(1)) is None
    with pytest.raises(FrontendError, match="weight zero point"):
        weight_quant(_quant(), {"x": w, **_consts(2.0**-4, zp=1.0)}, "q")
