"""Compare two runs layer by layer (exact equality only) and name the first difference.

Inputs are a bundle's layer metadata (``Manifest.layers``, :class:`~shiftbook.manifest.LayerMeta`)
and two sets of tensors (name ->
int array ``(C, H, W)``), or two memory images read through the bundle's tensor placements.
A mismatch report names the first differing layer, its tile (output-channel group, output-row
band, pixel tile within the band) and element ``(c, y, x)`` with both values.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from shiftbook.manifest import LayerMeta, Manifest
from shiftbook.placement import unpack_tensor

__all__ = ["Mismatch", "CompareResult", "tile_of", "compare_tensors", "compare_memory"]


@dataclass
class Mismatch:
    layer: int
    layer_name: str
    tensor: str
    c: int
    y: int
    x: int
    expected: int
    got: int
    group: int
    band: int
    tile: int
    pixel: int

    def __str__(self) -> str:
        return (f"layer {self.layer} ({self.layer_name}), tensor {self.tensor!r}: first "
                f"mismatch at (c={self.c}, y={self.y}, x={self.x}): expected {self.expected}, "
                f"got {self.got} [group {self.group}, band {self.band}, tile {self.tile}, "
                f"PE row {self.pixel}]")


@dataclass
class CompareResult:
    bit_exact: bool
    mismatches: int
    first: Mismatch | None = None
    layers: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"bit_exact": self.bit_exact, "mismatches": self.mismatches,
                "first_mismatch": None if self.first is None else asdict(self.first),
                "layers": self.layers}

    def __str__(self) -> str:
        if self.bit_exact:
            return f"bit-exact ({len(self.layers)} layer(s))"
        return f"{self.mismatches} mismatching element(s); {self.first}"


def tile_of(layer: LayerMeta, c: int, y: int, x: int) -> dict[str, int]:
    """The tile that computed output element ``(c, y, x)`` of ``layer`` (bundle metadata)."""
    t = layer.tiles
    band = next((i for i, (o0, o1) in enumerate(t.bands) if o0 <= y < o1), -1)
    o0 = t.bands[band][0] if band >= 0 else 0
    p = (y - o0) * t.out_w + x
    return {"group": c // t.cols, "band": band, "tile": p // t.rows, "pixel": p % t.rows}


def compare_tensors(layers: list[LayerMeta] | tuple[LayerMeta, ...],
                    expected: dict[str, np.ndarray],
                    got: dict[str, np.ndarray]) -> CompareResult:
    """Compare every layer's output tensor in layer order."""
    total = 0
    first: Mismatch | None = None
    per_layer = []
    for lay in sorted(layers, key=lambda d: d.index):
        name = lay.output
        if name not in expected or name not in got:
            missing = "expected" if name not in expected else "got"
            raise KeyError(f"tensor {name!r} of layer {lay.name!r} missing from {missing}")
        e = np.asarray(expected[name], dtype=np.int64)
        g = np.asarray(got[name], dtype=np.int64)
        if e.shape != g.shape:
            raise ValueError(f"tensor {name!r}: shapes differ ({e.shape} vs {g.shape})")
        diff = e != g
        n = int(diff.sum())
        total += n
        per_layer.append({"index": lay.index, "name": lay.name, "tensor": name,
                          "mismatches": n, "elements": int(e.size)})
        if n and first is None:
            c, y, x = (int(v) for v in np.argwhere(diff)[0])
            tl = tile_of(lay, c, y, x)
            first = Mismatch(lay.index, lay.name, name, c, y, x, int(e[c, y, x]),
                             int(g[c, y, x]), **tl)
    return CompareResult(total == 0, total, first, per_layer)


def compare_memory(program: Manifest | Any, expected: bytes, got: bytes) -> CompareResult:
    """Compare two final memory images through the tensor placements of ``program``: a
    :class:`~shiftbook.manifest.Manifest`, a loaded bundle or a compiled program (anything
    with ``layers`` and ``tensors``)."""
    outs = {lay.output for lay in program.layers}
    exp = {n: unpack_tensor(expected, program.tensors[n]) for n in outs}
    gt = {n: unpack_tensor(got, program.tensors[n]) for n in outs}
    return compare_tensors(program.layers, exp, gt)
