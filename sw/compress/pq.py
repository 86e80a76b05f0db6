"""Product quantization with the activation-aware objective ("And the Bit Goes Down").

Per layer (bottom-up, the first conv stays uncompressed): sample the layer's inputs from the
partly compressed network, run EM (:func:`kmeans.pq_em`), replace the weight by its codewords,
fine-tune that layer's centroids with KL distillation from the float teacher (a centroid's
gradient is the mean of its members' gradients). Then fine-tune all centroids together (BN in
train mode). Finally codewords become shift codes (per-layer power-of-two scale) and the first
conv is shift-rounded; a last straight-through fine-tune recovers what rounding cost. The
accuracy after every step is recorded.

BN folded (the default, ``CompressOptions.fold_bn``): there is no BN to re-normalise after the
rounding, so the codewords are rounded right after the per-layer stage, the biases are
recalibrated, and one straight-through fine-tune (Adam) trains centroids, first conv and biases
(docs/compression.md, "BN folding"). ``target_ratio`` lowers k per layer (:func:`fit_ratio`).
"""

from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.utils.data import DataLoader
from tqdm import tqdm

from shiftbook.sw.models.formats import CodebookFormat, Format, ShiftFormat
from shiftbook.sw.train import TrainConfig, evaluate, train

from .common import (
    CompressOptions,
    Steps,
    affine_params,
    frozen_copy,
    infinite_batches,
    kd_loss,
    recalibrate,
)
from .core import (
    CompressError,
    ShiftSTE,
    compressible_layers,
    has_bn,
    shift_codes,
    shift_decode,
)
from .kmeans import clamp_k, output_error, pq_em
from .size import LayerPlan, layer_size, size_report

__all__ = ["PRESETS", "pq_plan", "fit_ratio", "collect_inputs", "CodebookParam", "pq",
           "is_bottleneck", "encode_layer"]

PRESETS = ("small", "large")


def is_bottleneck(model: nn.Module) -> bool:
    return any(type(m).__name__ == "Bottleneck" for m in model.modules())


def pq_plan(model: nn.Module, opts: CompressOptions, *, fp32_bytes: float | None = None
            ) -> dict[str, tuple[int, int]]:
    """(k, d) for every PQ layer (all compressible layers but the first), options checked.

    With ``opts.target_ratio`` the preset's k are then lowered by :func:`fit_ratio` until the
    paper-accounted size is at most ``fp32_bytes / target_ratio`` (``fp32_bytes``: the ratio's
    baseline, default ``model``'s own parameters at 4 bytes).
    """
    if opts.preset not in PRESETS:
        raise CompressError(f"unknown PQ preset {opts.preset!r} ({', '.join(PRESETS)})")
    large = opts.preset == "large"
    bottle = is_bottleneck(model)
    layers = compressible_layers(model)[1:]
    if not layers:
        raise CompressError("the model has no layer to quantize besides the first")
    plan = {}
    biggest = max(mod.weight.numel() for _, mod in layers)
    for name, mod in layers:
        w = mod.weight
        r = w[0].numel()
        if isinstance(mod, nn.Linear):
            d = opts.d or 4
            k = opts.fc_k or opts.k or (1024 if bottle else 2048)
        else:
            kk = mod.kernel_size[0] * mod.kernel_size[1]
            if kk > 1:
                d = opts.d or (2 * kk if large else kk)
            else:
                d = opts.d or (8 if (large and bottle) else 4)
            k = opts.k or 256
        if d < 1 or r % d:
            raise CompressError(f"block size d={d} does not divide layer {name}'s reduction "
                                f"length {r} (C_in*KH*KW)")
        if d > opts.max_d:
            raise CompressError(f"block size d={d} exceeds the core's max_d={opts.max_d}")
        if k < 2:
            raise CompressError(f"k={k} must be at least 2")
        n_sub = w.numel() // d
        if opts.k is not None and opts.k > biggest // d:
            raise CompressError(f"k={opts.k} is larger than the number of sub-vectors of any "
                                f"layer (largest: {biggest // d} in blocks of d={d})")
        if opts.clamp:
            k = clamp_k(k, n_sub)
        elif k > n_sub:
            raise CompressError(f"k={k} is larger than the number of sub-vectors ({n_sub}) of "
                                f"layer {name}")
        if k > opts.max_k:     # after the clamp: a preset's fc k=2048 clamps to 32 on ResNet-8
            raise CompressError(f"k={k} of layer {name} exceeds the core's max_k="
                                f"{opts.max_k}")
        plan[name] = (k, d)
    if opts.target_ratio is not None:
        plan = fit_ratio(model, plan, opts.target_ratio, fp32_bytes=fp32_bytes)
    return plan


def _paper_plans(model: nn.Module, plan: dict[str, tuple[int, int]]) -> dict[str, LayerPlan]:
    """The paper's accounting of a PQ model: the first conv fp32, the others codebooks."""
    first = compressible_layers(model)[0][0]
    plans = {first: LayerPlan("fp32")}
    plans.update({n: LayerPlan("codebook", k=k, d=d) for n, (k, d) in plan.items()})
    return plans


def fit_ratio(model: nn.Module, plan: dict[str, tuple[int, int]], target: float, *,
              fp32_bytes: float | None = None) -> dict[str, tuple[int, int]]:
    """Lower k until the paper-accounted size (:func:`.size.size_report`) is at most
    ``fp32_bytes / target``: each step halves the k of the layer where halving saves the most
    bytes (index bits + fp16 codebook; ties: the earlier layer), never below 2; d never
    changes. A target that even k = 2 everywhere cannot meet raises :class:`CompressError`."""
    if not target > 0:
        raise CompressError(f"target ratio must be positive, not {target}")
    plan = dict(plan)
    rep = size_report(model, _paper_plans(model, plan), fp32_bytes=fp32_bytes)
    budget = rep.fp32_bytes / target
    size = rep.paper_bytes
    mods = {n: model.get_submodule(n) for n in plan}

    def paper(n: str, k: int) -> float:
        return layer_size(n, mods[n], LayerPlan("codebook", k=k, d=plan[n][1])).paper_bytes

    while size > budget * (1 + 1e-12):
        best, gain = None, 0.0
        for n, (k, _) in plan.items():
            if k > 2:
                g = paper(n, k) - paper(n, max(2, k // 2))
                if g > gain:
                    best, gain = n, g
        if best is None:
            raise CompressError(
                f"target ratio {target:g}x cannot be met: with k=2 in every PQ layer (block "
                f"sizes kept) the model is {size / 1024:.2f} KiB = "
                f"{rep.fp32_bytes / size:.2f}x of {rep.fp32_bytes / 1024:.2f} KiB fp32")
        k, d = plan[best]
        plan[best] = (max(2, k // 2), d)
        size -= gain
    return plan


def collect_inputs(model: nn.Module, name: str, loader: DataLoader, n_images: int,
                   n_rows: int, seed: int = 0) -> torch.Tensor:
    """Up to ``n_rows`` im2col rows (float32, (m, R)) of layer ``name``'s inputs on the first
    ``n_images`` training images, run through ``model`` in eval mode."""
    mod = model.get_submodule(name)
    gen = torch.Generator().manual_seed(seed)
    bufs: list[torch.Tensor] = []

    def hook(_m: nn.Module, args: tuple, _out: torch.Tensor) -> None:
        x = args[0].detach()
        if isinstance(mod, nn.Conv2d):
            cols = F.unfold(x, mod.kernel_size, dilation=mod.dilation, padding=mod.padding,
                            stride=mod.stride)                 # (N, R, L)
            bufs.append(cols.transpose(1, 2).reshape(-1, cols.shape[1]))
        else:
            bufs.append(x.reshape(x.shape[0], -1))

    h = mod.register_forward_hook(hook)
    was = model.training
    model.eval()
    seen = 0
    try:
        with torch.no_grad():
            for x, _ in loader:
                x = x[: n_images - seen]
                model(x)
                seen += len(x)
                if seen >= n_images:
                    break
    finally:
        h.remove()
        model.train(was)
    rows = torch.cat(bufs)
    if rows.shape[0] > n_rows:
        rows = rows[torch.randperm(rows.shape[0], generator=gen)[:n_rows]]
    return rows


class CodebookParam(nn.Module):
    """Parametrization: weight = codewords[assignments] (trainable codewords). With
    ``exp_bits`` set, codewords are shift-rounded in the forward (straight-through)."""

    def __init__(self, centroids: torch.Tensor, assignments: torch.Tensor,
                 shape: tuple[int, ...]) -> None:
        super().__init__()
        self.centroids = nn.Parameter(centroids.to(torch.float32).clone())
        self.register_buffer("assignments", assignments.reshape(-1).clone())
        k = centroids.shape[0]
        counts = torch.bincount(self.assignments, minlength=k).clamp(min=1).to(torch.float32)
        self.register_buffer("counts", counts)
        self.shape = tuple(shape)
        self.exp_bits: int | None = None
        self.rounding = "log"
        self.w_frac: int | None = None
        # A centroid's gradient is the mean of its members' gradients.
        self.centroids.register_hook(lambda g: g / self.counts[:, None])

    def quantized(self) -> torch.Tensor:
        c = self.centroids
        if self.exp_bits is None:
            return c
        with torch.no_grad():
            codes, _ = shift_codes(c, self.exp_bits, rounding=self.rounding, w_frac=self.w_frac)
            q = shift_decode(codes, np.full(c.shape[0], self.w_frac), self.exp_bits)
        return c + (q - c).detach()

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return self.quantized()[self.assignments].reshape(self.shape)


def _layer_w_frac(c: torch.Tensor, exp_bits: int, rounding: str) -> int:
    _, wf = shift_codes(c, exp_bits, rounding=rounding, per_channel=False)
    return int(wf[0])


def encode_layer(p: CodebookParam, exp_bits: int, rounding: str) -> CodebookFormat:
    """The layer's hardware format: codewords as shift codes at the layer's scale."""
    wf = p.w_frac if p.w_frac is not None else _layer_w_frac(p.centroids, exp_bits, rounding)
    codes, _ = shift_codes(p.centroids, exp_bits, rounding=rounding, w_frac=wf)
    k, d = p.centroids.shape
    cout = p.shape[0]
    return CodebookFormat(k, d, exp_bits, codes, p.assignments.reshape(cout, -1),
                          np.full(cout, wf), p.shape)


def _params(m: nn.Module, name: str) -> CodebookParam:
    return m.get_submodule(name).parametrizations.weight[0]


@torch.no_grad()
def _kd_on(model: nn.Module, teacher: nn.Module, batches: list[torch.Tensor]) -> float:
    loss_fn = kd_loss(teacher)
    return float(sum(loss_fn(model(x), None, x) for x in batches))


def _finetune_iters(model: nn.Module, loader: DataLoader, params: list[nn.Parameter],
                    teacher: nn.Module, iters: int, lr: float, progress: bool, desc: str
                    ) -> bool:
    """Per-layer centroid fine-tuning (BN frozen). Keeps the result only if the distillation
    loss on a few fixed training batches went down (guards against divergence); returns
    whether it was kept."""
    opt = torch.optim.SGD(params, lr=lr, momentum=0.9, weight_decay=1e-4)
    loss_fn = kd_loss(teacher)
    it = infinite_batches(loader)
    was = model.training
    model.eval()  # per-layer: BN statistics stay as they are
    probe = [x for (x, _), _ in zip(loader, range(4), strict=False)]
    before = _kd_on(model, teacher, probe)
    saved = [p.detach().clone() for p in params]
    for _ in tqdm(range(iters), desc=desc, leave=False, disable=not progress):
        x, y = next(it)
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y, x).backward()
        opt.step()
    kept = _kd_on(model, teacher, probe) <= before
    if not kept:
        with torch.no_grad():
            for p, s in zip(params, saved, strict=True):
                p.copy_(s)
    model.train(was)
    return kept


def pq(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
       opts: CompressOptions, steps: Steps, *, teacher: nn.Module | None = None,
       act_aware: bool = True, fp32_bytes: float | None = None
       ) -> tuple[nn.Module, dict[str, Format]]:
    """Compress with PQ; returns (model with decoded weights, formats). ``act_aware=False``
    runs plain weight k-means instead of the activation-aware E-step (for comparisons).
    ``fp32_bytes``: baseline of ``opts.target_ratio`` (see :func:`pq_plan`)."""
    plan = pq_plan(model, opts, fp32_bytes=fp32_bytes)
    teacher = teacher if teacher is not None else frozen_copy(model)
    m = copy.deepcopy(model)
    for p in m.parameters():
        p.requires_grad_(False)
    first = compressible_layers(m)[0][0]
    for li, (name, (k, d)) in enumerate(plan.items()):
        _quantize_layer(m, name, li, k, d, train_loader, test_loader, opts, steps, teacher,
                        act_aware)
    cps = [_params(m, n) for n in plan]
    # BN affine parameters (or, BN folded, the conv/linear biases) stay float (the compiler
    # folds them into BIAS); with opts.train_bn they adapt in the global fine-tunings too (the
    # paper trains centroids only).
    bn = affine_params(m) if opts.train_bn else []
    for p in bn:
        p.requires_grad_(True)
    fmod = m.get_submodule(first)
    # BN folded: no normalisation is left to absorb the gain errors of shift rounding, so the
    # codewords become shift codes *before* the global fine-tune, which then trains through the
    # rounding (straight-through) for global_ft_epochs + shift_ft_epochs with Adam (lr 1e-3,
    # DeepShift-Q's); SGD at lr 0.01 after late rounding diverged there (ResNet-8: 40% -> 12%).
    early = not has_bn(m)
    if not early and opts.global_ft_epochs:
        _global_finetune(m, cps, bn, train_loader, test_loader, opts, steps, teacher)
    _round_to_shift(m, cps, fmod, train_loader, test_loader, opts, steps, teacher)
    _shift_finetune(m, cps, bn, fmod, early, train_loader, test_loader, opts, steps, teacher)
    formats = _final_formats(m, plan, cps, first, opts)
    for p in m.parameters():
        p.requires_grad_(True)
    return m, formats


def _quantize_layer(m: nn.Module, name: str, li: int, k: int, d: int, train_loader: DataLoader,
                    test_loader: DataLoader, opts: CompressOptions, steps: Steps,
                    teacher: nn.Module, act_aware: bool) -> None:
    """The per-layer stage of layer ``name`` (``li``-th in the plan): sample its inputs from
    the partly compressed ``m``, run EM, parametrize its weight by the codewords, fine-tune
    its centroids by distillation, and record the step."""
    mod = m.get_submodule(name)
    w = mod.weight.detach()
    rows = collect_inputs(m, name, train_loader, opts.n_activations, 4 * opts.n_rows,
                          seed=opts.seed + li)
    v = w.reshape(w.shape[0], -1, d).reshape(-1, d)
    sample = None
    if act_aware:
        g = torch.Generator().manual_seed(opts.seed + 1000 + li)

        def sample(i: int, rows: torch.Tensor = rows, g: torch.Generator = g,
                   d: int = d) -> torch.Tensor:
            idx = torch.randint(rows.shape[0], (min(opts.n_rows, rows.shape[0]),),
                                generator=g)
            return rows[idx].reshape(-1, d)

    c, a, splits = pq_em(v, k, sample_x=sample, iters=opts.em_iters,
                         seed=opts.seed + li, eps=opts.eps)
    cp = CodebookParam(c, a, tuple(w.shape))
    parametrize.register_parametrization(mod, "weight", cp, unsafe=True)
    mod.parametrizations.weight.original.requires_grad_(False)
    w_hat = mod.weight.detach()
    err = output_error(rows, w.reshape(w.shape[0], -1), w_hat.reshape(w.shape[0], -1))
    acc_q = evaluate(m, test_loader)
    kept = False
    if opts.layer_ft_iters:
        lr = opts.lr or 0.05
        kept = _finetune_iters(m, train_loader, [cp.centroids], teacher,
                               opts.layer_ft_iters, lr, opts.progress,
                               f"pq finetune {name}")
        if not kept and not has_bn(m):   # BN folded: retry a diverged one at lr / 10
            kept = _finetune_iters(m, train_loader, [cp.centroids], teacher,
                                   opts.layer_ft_iters, lr / 10, opts.progress,
                                   f"pq finetune {name} (lr/10)")
    steps.add(f"pq {name}", evaluate(m, test_loader), k=k, d=d, out_err=round(err, 6),
              acc_quantized=round(acc_q, 3), splits=splits, finetune_kept=kept)


def _global_finetune(m: nn.Module, cps: list[CodebookParam], bn: list[nn.Parameter],
                     train_loader: DataLoader, test_loader: DataLoader, opts: CompressOptions,
                     steps: Steps, teacher: nn.Module) -> None:
    """With BN: fine-tune all centroids together (SGD, BN in train mode) before rounding."""
    cfg = TrainConfig(epochs=opts.global_ft_epochs, lr=0.01, optimizer="sgd",
                      weight_decay=1e-4, schedule="step",
                      step_size=max(1, math.ceil(opts.global_ft_epochs / 3)),
                      progress=opts.progress, desc="pq global finetune")
    train(m, train_loader, cfg, params=[p.centroids for p in cps] + bn,
          loss_fn=kd_loss(teacher))
    steps.add("pq global finetune", evaluate(m, test_loader))


def _round_to_shift(m: nn.Module, cps: list[CodebookParam], fmod: nn.Module,
                    train_loader: DataLoader, test_loader: DataLoader, opts: CompressOptions,
                    steps: Steps, teacher: nn.Module) -> None:
    """Codewords -> shift codes (per-layer scale, straight-through), first conv -> shift codes
    (:class:`ShiftSTE`), then the recalibration step of :func:`.common.recalibrate`."""
    for cp in cps:
        cp.exp_bits, cp.rounding = opts.exp_bits, opts.rounding
        cp.w_frac = _layer_w_frac(cp.centroids.detach(), opts.exp_bits, opts.rounding)
    parametrize.register_parametrization(fmod, "weight", ShiftSTE(opts.exp_bits, opts.rounding,
                                                                  opts.per_channel))
    steps.add("codewords -> shift codes", evaluate(m, test_loader))
    if step := recalibrate(m, teacher, train_loader, opts):
        steps.add(step, evaluate(m, test_loader))


def _shift_finetune(m: nn.Module, cps: list[CodebookParam], bn: list[nn.Parameter],
                    fmod: nn.Module, early: bool, train_loader: DataLoader,
                    test_loader: DataLoader, opts: CompressOptions, steps: Steps,
                    teacher: nn.Module) -> None:
    """The straight-through fine-tune after rounding: centroids, first conv and (with
    ``opts.train_bn``) the affine parameters. ``early`` (BN folded): Adam for
    ``global_ft_epochs + 2 * shift_ft_epochs``; with BN: SGD for ``shift_ft_epochs``."""
    # BN folded: one straight-through fine-tune of global_ft_epochs + 2 * shift_ft_epochs (16
    # by default): without BN to re-normalise, recovering from the rounding takes longer
    # (ResNet-8: 10 epochs 96.67%, 16 epochs 97.50%, float 98.89%)
    epochs = (opts.global_ft_epochs + 2 * opts.shift_ft_epochs) if early \
        else opts.shift_ft_epochs
    if not epochs:
        return
    orig = fmod.parametrizations.weight.original
    orig.requires_grad_(True)
    cfg = TrainConfig(epochs=epochs, lr=1e-3 if early else 0.01,
                      optimizer="adam" if early else "sgd",
                      weight_decay=0.0, schedule="cosine", progress=opts.progress,
                      desc="pq shift finetune")
    train(m, train_loader, cfg, params=[p.centroids for p in cps] + [orig] + bn,
          loss_fn=kd_loss(teacher))
    steps.add("shift-aware finetune", evaluate(m, test_loader))


def _final_formats(m: nn.Module, plan: dict[str, tuple[int, int]], cps: list[CodebookParam],
                   first: str, opts: CompressOptions) -> dict[str, Format]:
    """Remove the parametrizations (weights left decoded) and return every layer's hardware
    format: the first conv's shift codes, the others' codebooks (:func:`encode_layer`)."""
    formats: dict[str, Format] = {}
    fmod = m.get_submodule(first)
    parametrize.remove_parametrizations(fmod, "weight", leave_parametrized=False)
    codes, wf = shift_codes(fmod.weight, opts.exp_bits, rounding=opts.rounding,
                            per_channel=opts.per_channel)
    formats[first] = ShiftFormat(opts.exp_bits, wf, codes)
    for name, cp in zip(plan, cps, strict=True):
        formats[name] = encode_layer(cp, opts.exp_bits, opts.rounding)
        parametrize.remove_parametrizations(m.get_submodule(name), "weight",
                                            leave_parametrized=False)
    return formats
