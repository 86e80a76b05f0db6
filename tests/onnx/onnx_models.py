"""Brevitas models of the ONNX tests, exported to QONNX files.

The quantizers use constant power-of-two scales (Brevitas's statistics-based fixed-point
scale maps a power-of-two maximum onto 128, which an 8-bit quantizer clips to 127, so weights
that are exact powers of two would not stay so). Activation quantizers are unsigned 7-bit after
a ReLU (the core's int8 saturation) or signed 8-bit at the input. Brevitas exports
``rounding_mode="ROUND"`` (half to even); :func:`export` sets the activation quantizers to
``HALF_UP``, the rounding the core implements, so that those models are exactly representable.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

warnings.filterwarnings("ignore")

import brevitas.nn as qnn  # noqa: E402
from brevitas.export import export_qonnx  # noqa: E402
from brevitas.inject.enum import ScalingImplType  # noqa: E402
from brevitas.quant import (  # noqa: E402
    Int8ActPerTensorFixedPoint,
    Int8WeightPerTensorFixedPoint,
    Int8WeightPerTensorFloat,
    Uint8ActPerTensorFixedPoint,
)


class PotWeight(Int8WeightPerTensorFixedPoint):
    """8-bit weights at the constant scale 2**-7."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_init = 1.0


class FloatWeight4(Int8WeightPerTensorFloat):
    """4-bit weights with a float (not power-of-two) per-tensor scale."""

    bit_width = 4


class InAct(Int8ActPerTensorFixedPoint):
    """Signed 8-bit input at the constant scale 2**-5."""

    scaling_impl_type = ScalingImplType.CONST
    scaling_init = 4.0


class ReluAct(Uint8ActPerTensorFixedPoint):
    """Unsigned 7-bit after a ReLU at the constant scale 2**-5 ([0, 127] * 2**-5)."""

    bit_width = 7
    scaling_impl_type = ScalingImplType.CONST
    scaling_init = 4.0


def _relu() -> nn.Module:
    return qnn.QuantReLU(act_quant=ReluAct, return_quant_tensor=False)


class SmallCnn(nn.Module):
    """conv-ReLU, max pool, conv-ReLU, linear-ReLU on a 1x8x8 image."""

    def __init__(self, weight_quant: type = PotWeight) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=InAct, return_quant_tensor=False)
        self.c1 = qnn.QuantConv2d(1, 4, 3, padding=1, bias=False, weight_quant=weight_quant)
        self.r1 = _relu()
        self.pool = nn.MaxPool2d(2)
        self.c2 = qnn.QuantConv2d(4, 8, 3, padding=1, bias=False, weight_quant=weight_quant)
        self.r2 = _relu()
        self.fc = qnn.QuantLinear(8 * 4 * 4, 10, bias=False, weight_quant=weight_quant)
        self.r3 = _relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r1(self.c1(self.inp(x)))
        x = self.r2(self.c2(self.pool(x)))
        return self.r3(self.fc(torch.flatten(x, 1)))


class BasicBlock(nn.Module):
    """A ResNet basic block: conv-ReLU, conv, + identity, ReLU (3x6x6 input)."""

    def __init__(self) -> None:
        super().__init__()
        self.inp = qnn.QuantIdentity(act_quant=InAct, return_quant_tensor=False)
        self.stem = qnn.QuantConv2d(3, 4, 3, padding=1, bias=False, weight_quant=PotWeight)
        self.r0 = _relu()
        self.c1 = qnn.QuantConv2d(4, 4, 3, padding=1, bias=False, weight_quant=PotWeight)
        self.r1 = _relu()
        self.c2 = qnn.QuantConv2d(4, 4, 3, padding=1, bias=False, weight_quant=PotWeight)
        self.r2 = _relu()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.r0(self.stem(self.inp(x)))
        y = self.c2(self.r1(self.c1(x)))
        return self.r2(y + x)


def pot_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """Set every conv/linear weight to 0 or ±2**e with e in [-6, -2] (exact at scale 2**-7)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Conv2d | nn.Linear):
                w = m.weight
                e = torch.randint(-6, -1, w.shape, generator=g).float()
                s = torch.where(torch.rand(w.shape, generator=g) < 0.5, -1.0, 1.0)
                z = torch.rand(w.shape, generator=g) < 0.2
                w.copy_(torch.where(z, 0.0, s * 2.0**e))
    return model


def export(model: nn.Module, shape: tuple[int, ...], path: Path, half_up: bool = True) -> Path:
    """``model`` (eval) as a QONNX file; with ``half_up`` its activation quantizers round half
    up (see the module docstring)."""
    import onnx

    model.eval()
    export_qonnx(model, input_t=torch.zeros(1, *shape), export_path=str(path))
    if half_up:
        m = onnx.load(str(path))
        inits = {i.name for i in m.graph.initializer}
        for n in m.graph.node:
            if n.op_type == "Quant" and n.input[0] not in inits:
                for a in n.attribute:
                    if a.name == "rounding_mode":
                        a.s = b"HALF_UP"
        onnx.save(m, str(path))
    return Path(path)
