"""External memory layout: tensor placement and the memory image.

An activation tensor ``(C, H, W)`` lives at a bus-word-aligned byte address with row pitch
``W`` rounded up to ``bus_bytes`` and plane ``H * pitch``; byte ``(c, y, x)`` is at
``addr + c*plane + y*pitch + x``; pad bytes are 0.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["Placement", "MemoryImage", "pack_tensor", "unpack_tensor"]


@dataclass(frozen=True)
class Placement:
    """Where a tensor lives in external memory (byte addresses)."""

    name: str
    shape: tuple[int, int, int]
    addr: int
    pitch: int
    plane: int
    frac: int = 0

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.plane

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "addr": self.addr,
                "pitch": self.pitch, "plane": self.plane, "frac": self.frac,
                "bytes": self.nbytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Placement:
        return cls(d["name"], tuple(d["shape"]), int(d["addr"]), int(d["pitch"]),
                   int(d["plane"]), int(d.get("frac", 0)))


def pack_tensor(values: np.ndarray, p: Placement) -> np.ndarray:
    """int8 ``(C, H, W)`` -> the tensor's bytes (``C*plane``, pad bytes 0) as uint8."""
    c, h, w = p.shape
    buf = np.zeros((c, h, p.pitch), np.uint8)
    buf[:, :, :w] = np.asarray(values, dtype=np.int64).astype(np.int8).view(np.uint8)
    out = np.zeros((c, p.plane), np.uint8)
    out[:, : h * p.pitch] = buf.reshape(c, -1)
    return out.reshape(-1)


def unpack_tensor(memory: bytes | bytearray | np.ndarray, p: Placement) -> np.ndarray:
    """The tensor's values (int64 ``(C, H, W)``) from a memory image."""
    c, h, w = p.shape
    mem = np.frombuffer(bytes(memory), np.uint8) if not isinstance(memory, np.ndarray) \
        else memory.astype(np.uint8, copy=False)
    end = p.addr + p.nbytes
    if end > mem.size:
        raise ValueError(f"tensor {p.name!r} [{p.addr}, {end}) lies beyond the memory image "
                         f"({mem.size} bytes)")
    raw = mem[p.addr:end].reshape(c, p.plane)[:, : h * p.pitch].reshape(c, h, p.pitch)
    return raw[:, :, :w].view(np.int8).astype(np.int64)


class MemoryImage:
    """A bump allocator over external memory plus the initial image bytes."""

    def __init__(self, bus_bytes: int, base: int, align: int = 64) -> None:
        self.bus_bytes = bus_bytes
        self.align = max(align, bus_bytes)
        self.top = self._up(base)
        self.chunks: list[tuple[int, bytes]] = []

    def _up(self, v: int) -> int:
        return -(-v // self.align) * self.align

    def alloc(self, nbytes: int, data: bytes | None = None) -> int:
        addr = self.top
        self.top = self._up(addr + max(nbytes, 1))
        if data is not None:
            assert len(data) <= nbytes
            self.chunks.append((addr, bytes(data)))
        return addr

    def place_tensor(self, name: str, shape: tuple[int, int, int], frac: int) -> Placement:
        b = self.bus_bytes
        pitch = -(-shape[2] // b) * b
        plane = shape[1] * pitch
        addr = self.alloc(shape[0] * plane)
        return Placement(name, tuple(shape), addr, pitch, plane, frac)

    def image(self, program: bytes) -> bytes:
        size = -(-self.top // self.bus_bytes) * self.bus_bytes
        img = bytearray(size)
        img[: len(program)] = program
        for addr, data in self.chunks:
            img[addr: addr + len(data)] = data
        return bytes(img)
