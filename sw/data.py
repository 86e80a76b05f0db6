"""Real data without downloads: scikit-learn's bundled handwritten digits.

1797 grey-scale 8x8 images of the digits 0-9 (values 0..16) ship inside scikit-learn. They are
scaled to [0, 1], upsampled bilinearly to ``size`` x ``size`` (32 by default, the CIFAR-style
models' input), and normalised with the training split's mean and standard deviation.

Channels: the images are grey, so the default is **one input channel** (build the model with
``in_channels=1``; the first convolution is then 3x smaller). ``channels=3`` replicates the
grey plane for models built with three input channels.

The train/test split is fixed: stratified, 20% test (360 images), ``random_state=0``. Only the
shuffling of training batches depends on ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

__all__ = ["DataError", "Digits", "load_digits", "digits_loaders", "DATASETS"]

DATASETS = ("digits",)
TEST_FRACTION = 0.2
SPLIT_SEED = 0


class DataError(ValueError):
    """Unknown data set or bad data option."""


@dataclass(frozen=True)
class Digits:
    x_train: torch.Tensor   # (N, C, size, size) float32, normalised
    y_train: torch.Tensor   # (N,) int64
    x_test: torch.Tensor
    y_test: torch.Tensor
    mean: float
    std: float

    @property
    def num_classes(self) -> int:
        return 10

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])


def load_digits(*, size: int = 32, channels: int = 1) -> Digits:
    """The digits set as normalised tensors, split train/test (see the module docstring)."""
    from sklearn.datasets import load_digits as _sk_digits
    from sklearn.model_selection import train_test_split

    if size < 8:
        raise DataError(f"digits input size must be >= 8, not {size}")
    if channels not in (1, 3):
        raise DataError(f"digits channels must be 1 or 3, not {channels}")
    d = _sk_digits()
    x = d.images.astype(np.float32) / 16.0
    y = d.target.astype(np.int64)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=TEST_FRACTION, random_state=SPLIT_SEED, stratify=y)
    xt = torch.from_numpy(x).unsqueeze(1)
    if size != 8:
        xt = F.interpolate(xt, size=(size, size), mode="bilinear", align_corners=False)
    mean = float(xt[tr].mean())
    std = float(xt[tr].std())
    xt = (xt - mean) / std
    if channels == 3:
        xt = xt.expand(-1, 3, -1, -1).contiguous()
    yt = torch.from_numpy(y)
    tr_t, te_t = torch.from_numpy(tr), torch.from_numpy(te)
    return Digits(xt[tr_t], yt[tr_t], xt[te_t], yt[te_t], mean, std)


def digits_loaders(*, batch_size: int = 64, size: int = 32, channels: int = 1, seed: int = 0,
                   eval_batch_size: int = 256) -> tuple[DataLoader, DataLoader]:
    """(train, test) DataLoaders; the training loader shuffles with a generator seeded by seed."""
    d = load_digits(size=size, channels=channels)
    g = torch.Generator().manual_seed(seed)
    train = DataLoader(TensorDataset(d.x_train, d.y_train), batch_size=batch_size,
                       shuffle=True, generator=g, drop_last=False)
    test = DataLoader(TensorDataset(d.x_test, d.y_test), batch_size=eval_batch_size)
    return train, test
