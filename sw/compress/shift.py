"""Power-of-two weights: DeepShift-Q, DeepShift-PS and INQ.

Each rounds every conv/linear weight to shift codes (``sw/numerics.float_to_shift``) with a
per-output-channel power-of-two scale ``w_frac`` (or per layer), exponent range from
``exp_bits``. BN (with ``fold_bn=False``) or, BN folded, the conv biases stay float and
train; after each rounding step :func:`.common.recalibrate` repairs BN statistics or biases
against the float model.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader

from shiftbook import numerics as nx
from shiftbook.sw.models.formats import ShiftFormat
from shiftbook.sw.train import TrainConfig, evaluate, train

from .common import CompressOptions, Steps, recalibrate
from .core import ShiftSTE, compressible_layers, has_bn, shift_codes, shift_decode

__all__ = ["deepshift_q", "deepshift_ps", "inq", "PSParam", "inq_w_frac", "inq_partition"]


def deepshift_q(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
                opts: CompressOptions, steps: Steps
                ) -> tuple[nn.Module, dict[str, ShiftFormat]]:
    """DeepShift-Q: float weights, shift-rounded in the forward, straight-through backward."""
    m = copy.deepcopy(model)
    layers = compressible_layers(m)
    for _, mod in layers:
        parametrize.register_parametrization(
            mod, "weight", ShiftSTE(opts.exp_bits, opts.rounding, opts.per_channel))
    steps.add(f"round ({opts.rounding})", evaluate(m, test_loader))
    if step := recalibrate(m, model, train_loader, opts):
        steps.add(step, evaluate(m, test_loader))
    if opts.epochs:
        # BN folded: lr 3e-4 (at DeepShift's 1e-3 the straight-through training without BN was
        # noisy: ResNet-8 over 3 seeds 97.87% mean vs 98.43% at 3e-4, float 98.89%)
        lr = opts.lr or (1e-3 if has_bn(m) else 3e-4)
        cfg = TrainConfig(epochs=opts.epochs, lr=lr, optimizer="adam",
                          weight_decay=0.0, schedule="cosine", progress=opts.progress,
                          desc="deepshift-q")
        train(m, train_loader, cfg)
    formats = {}
    for name, mod in layers:
        parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
        codes, wf = shift_codes(mod.weight, opts.exp_bits, rounding=opts.rounding,
                                per_channel=opts.per_channel)
        formats[name] = ShiftFormat(opts.exp_bits, wf, codes)
    return m, formats


class _PSFn(torch.autograd.Function):
    """W = round(S) * 2**round(P) * 2**-w_frac with DeepShift-PS's gradients:
    dL/dP = dL/dW * S * 2**P * ln2 (rounded values, scaled), dL/dS = dL/dW."""

    @staticmethod
    def forward(ctx, p, s, scale):  # noqa: ANN001 - autograd signature
        pr = torch.floor(p + 0.5)
        sr = torch.floor(s + 0.5)
        w = sr * torch.exp2(pr) * scale
        ctx.save_for_backward(w)
        return w

    @staticmethod
    def backward(ctx, g):  # noqa: ANN001
        (w,) = ctx.saved_tensors
        return g * w * math.log(2.0), g, None


class PSParam(nn.Module):
    """DeepShift-PS parametrization: trainable shift P in [0, emax] and sign S in [-1, 1]
    (ternary after rounding: 0 is the zero code); the layer's float weight is ignored."""

    def __init__(self, w: torch.Tensor, exp_bits: int, rounding: str, per_channel: bool
                 ) -> None:
        super().__init__()
        codes, wf = shift_codes(w, exp_bits, rounding=rounding, per_channel=per_channel)
        zero, sign, e = nx.shift_fields(codes, exp_bits)
        self.exp_bits = exp_bits
        self.P = nn.Parameter(torch.from_numpy(e.astype(np.float32)))
        s = np.where(zero != 0, 0.0, np.where(sign != 0, -1.0, 1.0)).astype(np.float32)
        self.S = nn.Parameter(torch.from_numpy(s))
        self.register_buffer("w_frac", torch.from_numpy(wf))
        shape = (-1,) + (1,) * (w.ndim - 1)
        self.register_buffer("scale", torch.exp2(-self.w_frac.to(torch.float32)).reshape(shape))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _PSFn.apply(self.P, self.S, self.scale)

    @torch.no_grad()
    def clamp_(self) -> None:
        self.P.clamp_(0.0, float((1 << self.exp_bits) - 1))
        self.S.clamp_(-1.0, 1.0)

    @torch.no_grad()
    def codes(self) -> np.ndarray:
        pr = torch.floor(self.P + 0.5).clamp(0, (1 << self.exp_bits) - 1).to(torch.int64)
        sr = torch.floor(self.S.clamp(-1, 1) + 0.5).to(torch.int64)
        return np.asarray(nx.encode_shift((sr == 0).numpy(), (sr < 0).numpy(),
                                          torch.where(sr == 0, 0, pr).numpy(), self.exp_bits))


def deepshift_ps(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
                 opts: CompressOptions, steps: Steps
                 ) -> tuple[nn.Module, dict[str, ShiftFormat]]:
    """DeepShift-PS from a pretrained model: P = round(log2|w|), S = sign(w); RAdam; no weight
    decay on P and S."""
    m = copy.deepcopy(model)
    layers = compressible_layers(m)
    ps = []
    for _, mod in layers:
        p = PSParam(mod.weight.detach(), opts.exp_bits, opts.rounding, opts.per_channel)
        parametrize.register_parametrization(mod, "weight", p, unsafe=True)
        mod.parametrizations.weight.original.requires_grad_(False)
        ps.append(p)
    steps.add(f"convert ({opts.rounding})", evaluate(m, test_loader))
    if step := recalibrate(m, model, train_loader, opts):
        steps.add(step, evaluate(m, test_loader))
    if opts.epochs:
        lr = opts.lr or 1e-3
        shift_params = [t for p in ps for t in (p.P, p.S)]
        ids = {id(t) for t in shift_params}
        others = [t for t in m.parameters() if t.requires_grad and id(t) not in ids]
        opt = torch.optim.RAdam([{"params": shift_params, "weight_decay": 0.0},
                                 {"params": others, "weight_decay": 0.0}], lr=lr)
        cfg = TrainConfig(epochs=opts.epochs, lr=lr, schedule="step",
                          step_size=max(1, opts.epochs // 3 + (opts.epochs % 3 > 0)),
                          progress=opts.progress, desc="deepshift-ps")

        def clamp() -> None:
            for p in ps:
                p.clamp_()

        train(m, train_loader, cfg, optimizer=opt, after_step=clamp)
    formats = {}
    for (name, mod), p in zip(layers, ps, strict=True):
        codes = p.codes()
        wf = p.w_frac.numpy().copy()
        parametrize.remove_parametrizations(mod, "weight", leave_parametrized=False)
        with torch.no_grad():
            mod.weight.copy_(shift_decode(codes, wf, opts.exp_bits))
        formats[name] = ShiftFormat(opts.exp_bits, wf, codes)
    return m, formats


def inq_w_frac(w: torch.Tensor, exp_bits: int, per_channel: bool) -> np.ndarray:
    """INQ's top level 2**n1, n1 = floor(log2(4*max|W|/3)), mapped to the largest exponent."""
    a = w.detach().abs().to(torch.float64).reshape(w.shape[0], -1)
    mx = a.amax(dim=1) if per_channel else a.max().expand(w.shape[0])
    emax = (1 << exp_bits) - 1
    safe = torch.where(mx > 0, mx, torch.ones_like(mx))
    n1 = torch.floor(torch.log2(4.0 * safe / 3.0))
    return torch.where(mx > 0, emax - n1, torch.zeros_like(n1)).to(torch.int64).numpy()


def inq_partition(w: torch.Tensor, frozen: torch.Tensor, portion: float) -> torch.Tensor:
    """The weights to quantize now: the largest-|w| still-float weights that bring the
    quantized share of the layer to ``portion`` (a bool mask, disjoint from ``frozen``)."""
    target = min(w.numel(), int(round(portion * w.numel())))
    need = target - int(frozen.sum())
    newly = torch.zeros(w.numel(), dtype=torch.bool)
    if need > 0:
        mag = w.detach().abs().masked_fill(frozen, -1.0).reshape(-1)
        newly[torch.topk(mag, need).indices] = True
    return newly.reshape(w.shape)


def inq(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
        opts: CompressOptions, steps: Steps) -> tuple[nn.Module, dict[str, ShiftFormat]]:
    """INQ: quantize the largest-magnitude weights first (accumulated portions
    ``opts.inq_steps``), linear-domain nearest power of two (zero included), retrain the rest
    with the quantized ones frozen."""
    m = copy.deepcopy(model)
    layers = compressible_layers(m)
    fracs = {n: inq_w_frac(mod.weight, opts.exp_bits, opts.per_channel) for n, mod in layers}
    masks = {n: torch.zeros_like(mod.weight, dtype=torch.bool) for n, mod in layers}
    qvals = {}
    for n, mod in layers:
        codes, _ = shift_codes(mod.weight, opts.exp_bits, rounding="linear", w_frac=fracs[n])
        qvals[n] = shift_decode(codes, fracs[n], opts.exp_bits)

    def restore() -> None:
        with torch.no_grad():
            for n, mod in layers:
                mod.weight[masks[n]] = qvals[n][masks[n]]

    for i, portion in enumerate(opts.inq_steps):
        for n, mod in layers:
            w = mod.weight.detach()
            # Re-quantize the still-float weights (they moved while retraining).
            codes, _ = shift_codes(w, opts.exp_bits, rounding="linear", w_frac=fracs[n])
            q = shift_decode(codes, fracs[n], opts.exp_bits)
            newly = inq_partition(w, masks[n], portion)
            qvals[n] = torch.where(newly, q, qvals[n])
            masks[n] |= newly
        restore()
        steps.add(f"inq {portion * 100:g}%", evaluate(m, test_loader))
        if step := recalibrate(m, model, train_loader, opts):
            steps.add(f"inq {portion * 100:g}% {step}", evaluate(m, test_loader))
        if portion < 1.0 and opts.epochs:
            cfg = TrainConfig(epochs=opts.epochs, lr=opts.lr or 2e-3, optimizer="sgd",
                              weight_decay=0.0, schedule="cosine", progress=opts.progress,
                              desc=f"inq step {i + 1}")
            train(m, train_loader, cfg, after_step=restore)
            steps.add(f"inq {portion * 100:g}% retrained", evaluate(m, test_loader))
    formats = {}
    for n, mod in layers:
        codes, _ = shift_codes(mod.weight, opts.exp_bits, rounding="linear", w_frac=fracs[n])
        formats[n] = ShiftFormat(opts.exp_bits, fracs[n], codes)
    return m, formats
