"""Scalar weight sharing: k-means with SLQ's loss-based partition and MLQ's layer increments.

Per layer the codebook is k shift codes (d = 1) at a per-layer power-of-two scale. Layers are
taken bottom-up in groups of ``mlq_group`` (MLQ's depth-level increments: while a group is
quantized, every still-float weight of the network retrains to compensate). Within a group,
SLQ's width-level increments (``slq_steps``, accumulated fractions of the k clusters):

1. k-means (``k_left`` clusters) on the layer's still-float weights;
2. each cluster's quantization loss is the distance of its centroid to its low-precision
   target (the nearest shift value, ``sw/numerics.float_to_shift``); the lowest-loss clusters
   are quantized until the accumulated fraction of the k clusters is reached;
3. their weights take the shared shift value and freeze;
4. the rest retrain (``epochs`` per step).

The criterion of step 2 is reconstructed from the paper's description (COMPRESSION.md marks it
[unverified]): the plain centroid-to-target distance, not weighted by cluster size.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from shiftbook.sw.models.formats import CodebookFormat
from shiftbook.sw.train import TrainConfig, evaluate, train

from .common import CompressOptions, Steps, recalibrate
from .core import CompressError, compressible_layers, shift_codes, shift_decode
from .kmeans import kmeans

__all__ = ["slq"]


def slq(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
        opts: CompressOptions, steps: Steps) -> tuple[nn.Module, dict[str, CodebookFormat]]:
    k = opts.k or 16
    if k < 2:
        raise CompressError(f"k={k} must be at least 2")
    if k > opts.max_k:
        raise CompressError(f"k={k} exceeds the core's max_k={opts.max_k}")
    m = copy.deepcopy(model)
    layers = compressible_layers(m)
    for name, mod in layers:
        if k > mod.weight.numel():
            raise CompressError(f"k={k} is larger than the number of weights "
                                f"({mod.weight.numel()}) of layer {name}")
    fracs = {n: shift_codes(mod.weight, opts.exp_bits, rounding=opts.rounding,
                            per_channel=False)[1][0] for n, mod in layers}
    masks = {n: torch.zeros_like(mod.weight, dtype=torch.bool) for n, mod in layers}
    qvals = {n: torch.zeros_like(mod.weight) for n, mod in layers}
    idx = {n: torch.zeros(mod.weight.shape, dtype=torch.int64) for n, mod in layers}
    books: dict[str, list[int]] = {n: [] for n, _ in layers}

    def restore() -> None:
        with torch.no_grad():
            for n, mod in layers:
                mod.weight[masks[n]] = qvals[n][masks[n]]

    groups = [layers[i:i + opts.mlq_group] for i in range(0, len(layers), opts.mlq_group)]
    for gi, group in enumerate(groups):
        for portion in opts.slq_steps:
            for n, mod in group:
                w = mod.weight.detach()
                free = ~masks[n]
                done = len(books[n])
                target = k if portion >= 1.0 else min(k, max(done + 1, round(portion * k)))
                if not bool(free.any()) or target <= done:
                    continue
                vals = w[free].reshape(-1, 1).to(torch.float64)
                k_left = min(k - done, vals.shape[0])
                c, a = kmeans(vals, k_left, iters=30, seed=opts.seed + gi)
                codes, _ = shift_codes(c.reshape(-1, 1), opts.exp_bits, rounding=opts.rounding,
                                       w_frac=np.full(k_left, fracs[n]))
                tgt = shift_decode(codes, np.full(k_left, fracs[n]), opts.exp_bits)
                tgt = tgt.reshape(-1).to(torch.float64)
                loss = (c.reshape(-1) - tgt).abs()
                order = torch.argsort(loss)
                n_q = k_left if portion >= 1.0 else min(k_left, target - done)
                chosen = order[:n_q]
                free_idx = torch.nonzero(free.reshape(-1)).reshape(-1)
                flat_mask = masks[n].reshape(-1).clone()
                flat_q = qvals[n].reshape(-1).clone()
                flat_i = idx[n].reshape(-1).clone()
                for ci in chosen.tolist():
                    sel = free_idx[a == ci]
                    flat_mask[sel] = True
                    flat_q[sel] = float(tgt[ci])
                    flat_i[sel] = len(books[n])
                    books[n].append(int(codes[ci, 0]))
                masks[n] = flat_mask.reshape(w.shape)
                qvals[n] = flat_q.reshape(w.shape)
                idx[n] = flat_i.reshape(w.shape)
            restore()
            recalibrate(m, model, train_loader, opts)
            steps.add(f"slq group {gi + 1} {portion * 100:g}%", evaluate(m, test_loader))
            last = gi == len(groups) - 1 and portion >= 1.0
            if opts.epochs and not last:
                cfg = TrainConfig(epochs=opts.epochs, lr=opts.lr or 5e-3, optimizer="sgd",
                                  weight_decay=0.0, schedule="cosine", progress=opts.progress,
                                  desc=f"slq g{gi + 1} {portion * 100:g}%")
                train(m, train_loader, cfg, after_step=restore)
    formats = {}
    for n, mod in layers:
        book = books[n]
        kk = len(book)
        if kk < 2:       # a layer with a single shared value still gets a 2-entry codebook
            book = book + book[:1] * (2 - kk)
            kk = 2
        w = mod.weight
        formats[n] = CodebookFormat(kk, 1, opts.exp_bits, torch.tensor(book).reshape(kk, 1),
                                    idx[n].reshape(w.shape[0], -1),
                                    np.full(w.shape[0], fracs[n]), tuple(w.shape))
    return m, formats
