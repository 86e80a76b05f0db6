"""Small, fast fixtures: a slice of the digits data and a tiny untrained/trained ResNet-8."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from shiftbook.sw.data import load_digits
from shiftbook.sw.models import build_model


@pytest.fixture(scope="session")
def digits():
    return load_digits(size=32, channels=1)


@pytest.fixture(scope="session")
def tiny_loaders(digits):
    """128 training and 64 test images (enough to exercise every code path quickly)."""
    g = torch.Generator().manual_seed(0)
    tr = DataLoader(TensorDataset(digits.x_train[:128], digits.y_train[:128]), batch_size=32,
                    shuffle=True, generator=g)
    te = DataLoader(TensorDataset(digits.x_test[:64], digits.y_test[:64]), batch_size=64)
    return tr, te


@pytest.fixture
def resnet8():
    m = build_model("resnet8", num_classes=10, in_channels=1, seed=0)
    return m.eval()


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: on the shared 2-core machine this is several times faster than
    two spinning threads competing with other jobs."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
