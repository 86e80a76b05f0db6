"""Scalar weight sharing: k-means with SLQ's loss-based partition (Xu et al., AAAI 2018).

Per layer the codebook is k shift codes (d = 1) at a per-layer power-of-two scale. SLQ
(``--method kmeans``) quantizes every layer at once in width-level increments (``slq_steps``,
accumulated fractions of the k clusters), repeated until every weight is quantized:

1. k-means (``k_left`` clusters) on the layer's still-float weights;
2. each cluster's quantization loss is the distance of its centroid to its low-precision
   target (the nearest shift value, ``sw/numerics.float_to_shift``); the clusters are ranked by
   that loss and quantized in the seed's order, **larger loss first** (:data:`ORDER` =
   ``"loss-desc"``: the weights that rounding hurts most freeze while the rest can still
   compensate), until the accumulated fraction of the k clusters is reached;
3. their weights take the shared shift value and freeze;
4. the rest retrain (``epochs`` per step, SGD at lr 5e-3); after the last step the float biases
   (the only float parameters left) fine-tune for ``epochs`` more.

MLQ (``--method mlq``, :mod:`.mlq`) runs the same machinery over groups of layers bottom-up
(:func:`share_weights` with ``group`` layers at a time). The criterion of step 2 is the plain
centroid-to-target distance, not weighted by cluster size (COMPRESSION.md marks the exact
criterion [unverified]).

The reverse order (smaller loss first, ``"loss-asc"``: this module's order before issue 16) is
not an option: on ResNet-8 / digits it was worse in mean and in worst accuracy over three
seeds, and on no seed better (docs/compression.md, "SLQ order and MLQ").
``bench/bench_compress.py`` still measures it, by setting :data:`ORDER` for its
"slq (other order)" row.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from shiftbook import numerics as nx
from shiftbook.sw.models.formats import CodebookFormat
from shiftbook.sw.train import TrainConfig, evaluate, train

from .common import CompressOptions, Steps, affine_params, recalibrate
from .core import CompressError, compressible_layers, shift_codes, shift_decode
from .kmeans import kmeans

__all__ = ["slq", "share_weights", "partition", "cluster_step", "SLQ_ORDERS", "ORDER"]

#: Orders of the loss-based partition: the seed's (larger loss first) and the reverse.
SLQ_ORDERS = ("loss-desc", "loss-asc")
#: The order SLQ and MLQ use (read at each call; the bench sets it for its comparison row).
ORDER = "loss-desc"


def partition(loss: torch.Tensor, n: int, order: str = "loss-desc") -> torch.Tensor:
    """Indices of the ``n`` clusters quantized at this step, ranked by quantization loss:
    largest first (``loss-desc``, the seed's order) or smallest first (``loss-asc``). Ties keep
    the cluster order (stable sort)."""
    if order not in SLQ_ORDERS:
        raise CompressError(f"unknown SLQ order {order!r} ({', '.join(SLQ_ORDERS)})")
    ranked = torch.argsort(loss, descending=order == "loss-desc", stable=True)
    return ranked[:n]


def cluster_step(vals: torch.Tensor, k_left: int, n_q: int, frac: int, opts: CompressOptions,
                 *, seed: int, ternary: bool = False, zero_taken: bool = False,
                 order: str = "loss-desc"
                 ) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, torch.Tensor, torch.Tensor]:
    """One width-level step on a layer's still-float weights ``vals`` (n, 1): k-means with
    ``k_left`` clusters, each centroid's shift target at scale ``2**-frac``, its loss
    ``|centroid - target|``, and the ``n_q`` clusters quantized now (:func:`partition` in
    ``order``).

    ``ternary`` (MLQ's k = 3 case): unless the layer already holds zero (``zero_taken``), the
    cluster whose centroid is nearest zero takes the zero code (its loss is ``|centroid|``); no
    other cluster may round to zero (it takes the smallest level of its sign instead), so the
    layer's values stay three distinct ones.

    Returns (chosen cluster indices, assignments (n,), codes (k_left,) int64, targets (k_left,)
    float64, losses (k_left,))."""
    c, a = kmeans(vals, k_left, iters=30, seed=seed)
    c = c.reshape(-1)
    codes, _ = shift_codes(c.reshape(-1, 1), opts.exp_bits, rounding=opts.rounding,
                           w_frac=np.full(k_left, frac))
    codes = codes.reshape(-1)
    if ternary:
        zero = nx.zero_code(opts.exp_bits)
        mid = -1 if zero_taken else int(c.abs().argmin())
        for i in range(k_left):
            if i == mid:
                codes[i] = zero
            elif nx.decode_shift(int(codes[i]), opts.exp_bits) == 0:
                codes[i] = nx.encode_shift(0, int(c[i] < 0), 0, opts.exp_bits)
    tgt = shift_decode(codes.reshape(-1, 1), np.full(k_left, frac), opts.exp_bits)
    tgt = tgt.reshape(-1).to(torch.float64)
    loss = (c - tgt).abs()
    return partition(loss, n_q, order), a, codes, tgt, loss


def share_weights(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
                  opts: CompressOptions, steps: Steps, *, group: int | None, label: str,
                  ternary: bool = False, portions: Sequence[float] | None = None,
                  order: str | None = None, optimizer: str = "sgd", lr: float = 5e-3
                  ) -> tuple[nn.Module, dict[str, CodebookFormat]]:
    """k-means weight sharing with SLQ's width-level increments (``portions``, default
    ``opts.slq_steps``) over groups of ``group`` layers bottom-up (None: every layer in one
    group, SLQ; MLQ: ``opts.mlq_group``). Between steps every still-float weight of the network
    retrains (``opts.epochs``): the quantized weights are restored after every optimizer step,
    so they stay frozen. ``ternary`` (k = 3): :func:`cluster_step`'s ternary rule (the cluster
    nearest zero becomes 0 while the layer holds no zero yet; no other becomes 0). ``order``:
    the partition order (None: :data:`ORDER`). After the last step only the float parameters
    that stay float in hardware are left (the biases of a BN-folded model, else BN affine:
    ``common.affine_params``); they fine-tune for ``opts.epochs`` more epochs. Retraining uses
    ``optimizer`` at ``opts.lr`` or ``lr``, cosine schedule, no weight decay. Step records:
    ``{label} group G P%``, then ``{label} biases fine-tuned``."""
    order = ORDER if order is None else order
    if order not in SLQ_ORDERS:
        raise CompressError(f"unknown SLQ order {order!r} ({', '.join(SLQ_ORDERS)})")
    k = opts.k or 16
    if k < 2:
        raise CompressError(f"k={k} must be at least 2")
    if k > opts.max_k:
        raise CompressError(f"k={k} exceeds the core's max_k={opts.max_k}")
    portions = tuple(opts.slq_steps if portions is None else portions)
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
    zero = nx.zero_code(opts.exp_bits)

    def restore() -> None:
        with torch.no_grad():
            for n, mod in layers:
                mod.weight[masks[n]] = qvals[n][masks[n]]

    size = group or len(layers)
    groups = [layers[i:i + size] for i in range(0, len(layers), size)]
    for gi, grp in enumerate(groups):
        for portion in portions:
            for n, mod in grp:
                w = mod.weight.detach()
                free = ~masks[n]
                done = len(books[n])
                target = k if portion >= 1.0 else min(k, max(done + 1, round(portion * k)))
                if not bool(free.any()) or target <= done:
                    continue
                vals = w[free].reshape(-1, 1).to(torch.float64)
                k_left = min(k - done, vals.shape[0])
                n_q = k_left if portion >= 1.0 else min(k_left, target - done)
                chosen, a, codes, tgt, _ = cluster_step(
                    vals, k_left, n_q, fracs[n], opts, seed=opts.seed + gi,
                    ternary=ternary, zero_taken=zero in books[n], order=order)
                free_idx = torch.nonzero(free.reshape(-1)).reshape(-1)
                flat_mask = masks[n].reshape(-1).clone()
                flat_q = qvals[n].reshape(-1).clone()
                flat_i = idx[n].reshape(-1).clone()
                for ci in chosen.tolist():
                    sel = free_idx[a == ci]
                    flat_mask[sel] = True
                    flat_q[sel] = float(tgt[ci])
                    flat_i[sel] = len(books[n])
                    books[n].append(int(codes[ci]))
                masks[n] = flat_mask.reshape(w.shape)
                qvals[n] = flat_q.reshape(w.shape)
                idx[n] = flat_i.reshape(w.shape)
            restore()
            recalibrate(m, model, train_loader, opts)
            steps.add(f"{label} group {gi + 1} {portion * 100:g}%", evaluate(m, test_loader))
            last = gi == len(groups) - 1 and portion >= 1.0
            params = affine_params(m) if last else None
            if opts.epochs and (params is None or params):
                desc = f"{label} biases" if last else f"{label} g{gi + 1} {portion * 100:g}%"
                cfg = TrainConfig(epochs=opts.epochs, lr=opts.lr or lr, optimizer=optimizer,
                                  weight_decay=0.0, schedule="cosine", progress=opts.progress,
                                  desc=desc)
                train(m, train_loader, cfg, after_step=restore, params=params)
                if last:
                    steps.add(f"{label} biases fine-tuned", evaluate(m, test_loader))
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


def slq(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
        opts: CompressOptions, steps: Steps) -> tuple[nn.Module, dict[str, CodebookFormat]]:
    """SLQ (``--method kmeans``): every layer at once, ``slq_steps`` width-level increments in
    :data:`ORDER`; see the module docstring."""
    return share_weights(model, train_loader, test_loader, opts, steps, group=None,
                         label="slq")
