"""Size accounting: the paper's way, and the bytes the hardware stores.

Paper ("And the Bit Goes Down", kill-the-bits ``compute_size``): a codebook layer costs
``log2(k)/d`` index bits per weight plus an fp16 codebook (``k*d*2`` bytes); a shift layer
``code_bits`` per weight; everything left uncompressed (the first conv, BN weight and bias,
classifier bias, a BN-folded model's conv biases, any other parameter) costs 4 bytes per value.
BN running statistics are buffers and are not counted. The fp32 baseline is 4 bytes per
parameter (of the model given, or ``fp32_bytes``: a BN-folded model is measured against its
unfolded original). MiB = 2**20 bytes.

Hardware bytes: codebook layers store indices packed at ``ceil(log2 k)`` bits and one byte per
codeword shift code (``k*d`` bytes) plus one scale byte; shift layers one byte per code (a WGT
buffer byte) plus one scale byte per output channel; every conv/linear output channel needs
one 8-byte BIAS entry (int32 bias, shift, residual shift, 2 reserved; docs/isa.md), which is
where the compiler folds BN and biases.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from torch import nn

from shiftbook.sw.models.formats import CodebookFormat, Format, ShiftFormat

from .core import compressible_layers

__all__ = ["LayerPlan", "LayerSize", "SizeReport", "size_report", "layer_size", "plan_of", "MIB"]

MIB = float(1 << 20)


@dataclass(frozen=True)
class LayerPlan:
    """How a layer's weights are stored: ``fp32``, ``shift`` (code_bits) or ``codebook`` (k, d).

    ``hw_shift`` marks an fp32-counted layer that the hardware still stores as shift codes.
    """

    kind: str
    k: int = 0
    d: int = 0
    code_bits: int = 6
    hw_shift: bool = False


@dataclass
class LayerSize:
    name: str
    kind: str
    n_weights: int
    bits_per_weight: float
    paper_bytes: float
    hw_bytes: int
    k: int = 0
    d: int = 0


@dataclass
class SizeReport:
    layers: list[LayerSize]
    other_params: int          # BN affine, biases, ...: counted fp32
    fp32_bytes: float          # all parameters at 4 bytes
    paper_bytes: float
    hw_bytes: int
    extra: dict = field(default_factory=dict)

    @property
    def paper_mib(self) -> float:
        return self.paper_bytes / MIB

    @property
    def ratio(self) -> float:
        return self.fp32_bytes / self.paper_bytes

    @property
    def hw_ratio(self) -> float:
        return self.fp32_bytes / self.hw_bytes

    def to_dict(self) -> dict:
        return {"layers": [asdict(x) for x in self.layers], "other_params": self.other_params,
                "fp32_bytes": self.fp32_bytes, "paper_bytes": self.paper_bytes,
                "hw_bytes": self.hw_bytes, "paper_mib": self.paper_mib, "ratio": self.ratio,
                "hw_ratio": self.hw_ratio}


def plan_of(fmt: Format | None, *, fp32: bool = False) -> LayerPlan:
    """The plan a format record implies (``fp32=True``: the paper counts the layer as fp32)."""
    if fmt is None:
        return LayerPlan("fp32")
    if fp32:
        return LayerPlan("fp32", hw_shift=True, code_bits=fmt.exp_bits + 2)
    if isinstance(fmt, CodebookFormat):
        return LayerPlan("codebook", k=fmt.k, d=fmt.d, code_bits=fmt.exp_bits + 2)
    assert isinstance(fmt, ShiftFormat)
    return LayerPlan("shift", code_bits=fmt.exp_bits + 2)


def layer_size(name: str, mod: nn.Module, plan: LayerPlan) -> LayerSize:
    """One conv/linear layer's weight bytes under ``plan`` (paper and hardware accounting)."""
    w = mod.weight
    n = w.numel()
    cout = w.shape[0]
    if plan.kind == "codebook":
        if n % plan.d:
            raise ValueError(f"{name}: d={plan.d} does not divide {n} weights")
        nidx = n // plan.d
        p = nidx * math.log2(plan.k) / 8 + plan.k * plan.d * 2
        ib = max(1, math.ceil(math.log2(plan.k)))
        h = math.ceil(nidx * ib / 8) + plan.k * plan.d + 1
        bpw = math.log2(plan.k) / plan.d
    elif plan.kind == "shift":
        p = n * plan.code_bits / 8
        h = n + cout
        bpw = float(plan.code_bits)
    elif plan.kind == "fp32":
        p = 4.0 * n
        h = n + cout if plan.hw_shift else 4 * n
        bpw = 32.0
    else:
        raise ValueError(f"{name}: unknown plan kind {plan.kind!r}")
    h += 8 * cout      # BIAS entry per output channel
    return LayerSize(name, plan.kind, n, bpw, p, h, plan.k, plan.d)


def size_report(model: nn.Module, plans: dict[str, LayerPlan], *,
                fp32_bytes: float | None = None) -> SizeReport:
    """Account every parameter of ``model``; compressible layers follow ``plans`` (missing:
    fp32). ``fp32_bytes``: the baseline of the ratios (default: ``model``'s parameters at 4
    bytes; a BN-folded model passes its unfolded original's)."""
    layers = []
    covered = set()
    paper = 0.0
    hw = 0
    for name, mod in compressible_layers(model):
        covered.add(f"{name}.weight")
        ls = layer_size(name, mod, plans.get(name, LayerPlan("fp32")))
        paper += ls.paper_bytes
        hw += ls.hw_bytes
        layers.append(ls)
    other = sum(p.numel() for n, p in model.named_parameters() if n not in covered)
    total = sum(p.numel() for p in model.parameters())
    paper += 4.0 * other
    fp32 = 4.0 * total if fp32_bytes is None else float(fp32_bytes)
    return SizeReport(layers, other, fp32, paper, hw)
