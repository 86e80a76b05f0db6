"""ResNets without torchvision: CIFAR-style (ResNet-8/20/56) and ImageNet-style (18/34/50).

State-dict keys follow torchvision's ResNet (``conv1``, ``bn1``, ``layer1.0.conv1``, ...,
``layer1.0.downsample.0``/``.1``, ``fc``) so checkpoints and layer names carry over.

CIFAR-style networks (He et al. 2016, section 4.2) have a 3x3 stem with 16 channels, three
stages of 16/32/64 channels with ``n`` basic blocks each (depth ``6n + 2``) and global average
pooling. Shortcuts that change shape use **option B**: a strided 1x1 convolution + BN
(``downsample.0``/``downsample.1``), not option A's zero padding, so every layer is a plain
convolution the accelerator runs.

``inner_widths`` (basic-block ResNets): one width per block, in block order, for the channels
between a block's two 3x3 convolutions (``conv1``'s outputs = ``conv2``'s inputs), the channels
structured pruning removes (``sw/compress/prune.py``). None (default): the plain widths, so
every unpruned model, its state dict and its bundles are unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "cifar_resnet", "imagenet_resnet"]


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and cin == cout:
        return None
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, planes: int, stride: int = 1, inner: int | None = None
                 ) -> None:
        super().__init__()
        inner = planes if inner is None else inner
        self.conv1 = _conv3x3(cin, inner, stride)
        self.bn1 = nn.BatchNorm2d(inner)
        self.relu = nn.ReLU(inplace=False)
        self.conv2 = _conv3x3(inner, planes)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = _downsample(cin, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return self.relu(y + idt)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck: the stride sits on the 3x3 convolution."""

    expansion = 4

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out)
        self.relu = nn.ReLU(inplace=False)
        self.downsample = _downsample(cin, out, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        idt = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + idt)


class ResNet(nn.Module):
    """A ResNet. ``style="cifar"``: 3x3 stem, no max pool; ``"imagenet"``: 7x7/2 stem + max pool.

    ``widths`` are the per-stage plane counts, ``blocks`` the blocks per stage,
    ``inner_widths`` (basic blocks only) one inner width per block (None: the stage's width).
    """

    def __init__(self, block: type[BasicBlock] | type[Bottleneck], blocks: Sequence[int],
                 widths: Sequence[int], *, style: str, num_classes: int = 10,
                 in_channels: int = 3, inner_widths: Sequence[int] | None = None) -> None:
        super().__init__()
        if style not in ("cifar", "imagenet"):
            raise ValueError(f"unknown ResNet style {style!r}")
        if num_classes < 1 or in_channels < 1:
            raise ValueError("num_classes and in_channels must be >= 1")
        inner = _check_inner(block, blocks, inner_widths)
        self.style = style
        stem = widths[0]
        if style == "cifar":
            self.conv1 = _conv3x3(in_channels, stem)
            self.maxpool = nn.Identity()
        else:
            self.conv1 = nn.Conv2d(in_channels, stem, 7, stride=2, padding=3, bias=False)
            self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=False)
        cin = stem
        for i, (n, w) in enumerate(zip(blocks, widths, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for j in range(n):
                extra = {} if inner is None else {"inner": inner.pop(0)}
                layers.append(block(cin, w, stride if j == 0 else 1, **extra))
                cin = w * block.expansion
            setattr(self, f"layer{i + 1}", nn.Sequential(*layers))
        self.n_stages = len(blocks)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for i in range(self.n_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x)


def _check_inner(block: type, blocks: Sequence[int], inner_widths: Sequence[int] | None
                 ) -> list[int] | None:
    """The inner widths as a list (one per block, each >= 1), or None."""
    if inner_widths is None:
        return None
    if block is not BasicBlock:
        raise ValueError("inner_widths applies to basic-block ResNets only (not bottlenecks)")
    try:
        widths = [int(w) for w in inner_widths]
    except (TypeError, ValueError):
        raise ValueError(f"inner_widths must be a list of integers, not {inner_widths!r:.60}"
                         ) from None
    if len(widths) != sum(blocks):
        raise ValueError(f"inner_widths has {len(widths)} entries; the network has "
                         f"{sum(blocks)} blocks")
    if min(widths) < 1:
        raise ValueError(f"inner_widths must all be >= 1, not {min(widths)}")
    return widths


def cifar_resnet(depth: int, *, num_classes: int = 10, in_channels: int = 3,
                 inner_widths: Sequence[int] | None = None) -> ResNet:
    if depth < 8 or (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n+2 >= 8, not {depth}")
    n = (depth - 2) // 6
    return ResNet(BasicBlock, [n] * 3, [16, 32, 64], style="cifar", num_classes=num_classes,
                  in_channels=in_channels, inner_widths=inner_widths)


_IMAGENET = {18: (BasicBlock, [2, 2, 2, 2]), 34: (BasicBlock, [3, 4, 6, 3]),
             50: (Bottleneck, [3, 4, 6, 3])}


def imagenet_resnet(depth: int, *, num_classes: int = 1000, in_channels: int = 3,
                    inner_widths: Sequence[int] | None = None) -> ResNet:
    if depth not in _IMAGENET:
        raise ValueError(f"ImageNet ResNet depth must be one of {sorted(_IMAGENET)}")
    block, blocks = _IMAGENET[depth]
    return ResNet(block, blocks, [64, 128, 256, 512], style="imagenet",
                  num_classes=num_classes, in_channels=in_channels, inner_widths=inner_widths)
