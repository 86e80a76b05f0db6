"""MLQ (Xu et al., AAAI 2018): k-means weight sharing with depth-level increments.

Layers are taken bottom-up in groups of ``mlq_group`` (one layer or a few at a time). The
group being quantized goes through SLQ's width-level partition (:mod:`.slq`: k-means on its
still-float weights, clusters ranked by quantization loss, the larger-loss ones quantized
first, ``slq_steps`` accumulated fractions of the k clusters); once a group is fully quantized
its weights are frozen, and between steps every still-float weight of the network -- the rest
of the group and every later layer -- retrains to compensate (``epochs`` per step, SGD at lr
5e-3). After the last layer only the float biases are left; they fine-tune for ``epochs``
more (:func:`.slq.share_weights`).

**Extremely low bits, k = 3 (ternary).** The paper's ternary MLQ keeps the two boundary clusters
and sets the one nearest zero to zero. Here, with ``k = 3``, the k-means cluster whose centroid
is nearest zero takes the zero code, the two boundary clusters take their centroids' nearest
shift values at the layer's power-of-two scale (never the zero code: a boundary centroid that
would round to zero takes the smallest level of its sign), so each layer holds exactly three
values ``{-2**a, 0, +2**b} * 2**-w_frac``. If a width-level step quantizes the zero cluster
later than a boundary one, the rule applies to the cluster nearest zero among those re-clustered
then. Hardware: an ordinary scalar codebook (``CodebookFormat``, k = 3, d = 1): 2-bit indices
(``ceil(log2 3)``) and three shift codes per layer; ``log2 3 = 1.58`` bits per weight in the
paper's accounting.

Ternary layers retrain with Adam at lr 1e-3 instead of SGD at 5e-3: on ResNet-8 / digits (seed
0, 98.9% float, three layers at a time, one epoch per step) SGD at 5e-3 ended at 19%, SGD at
1e-3 at 44%, Adam at 1e-3 at 81%; one layer at a time (``mlq_group = 1``, the default) with
Adam reached 97.2% (docs/compression.md, "MLQ").
"""

from __future__ import annotations

from torch import nn
from torch.utils.data import DataLoader

from shiftbook.sw.models.formats import CodebookFormat

from .common import CompressOptions, Steps
from .slq import share_weights

__all__ = ["mlq", "TERNARY_K"]

#: The codebook size of MLQ's extremely-low-bit (ternary) case.
TERNARY_K = 3


def mlq(model: nn.Module, train_loader: DataLoader, test_loader: DataLoader,
        opts: CompressOptions, steps: Steps) -> tuple[nn.Module, dict[str, CodebookFormat]]:
    """MLQ (``--method mlq``): ``mlq_group`` layers at a time, bottom-up, each group by SLQ's
    width-level partition; k = 3 is ternary (the cluster nearest zero becomes 0) and retrains
    with Adam at lr 1e-3 (SGD at 5e-3 otherwise)."""
    ternary = (opts.k or 16) == TERNARY_K
    return share_weights(model, train_loader, test_loader, opts, steps, group=opts.mlq_group,
                         label="mlq", ternary=ternary, optimizer="adam" if ternary else "sgd",
                         lr=1e-3 if ternary else 5e-3)
