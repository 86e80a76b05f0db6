"""Memory images as $readmemh/$writememh text, and the MARK log of a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_hex", "read_hex", "read_marks"]

def write_hex(path: Path, image: bytes, bus_bytes: int) -> int:
    """Write ``image`` for $readmemh (one word per line, most significant byte first)."""
    pad = -len(image) % bus_bytes
    data = np.frombuffer(image + bytes(pad), dtype=np.uint8).reshape(-1, bus_bytes)
    words = data.shape[0]
    hexed = np.frombuffer(data[:, ::-1].tobytes().hex().encode(), dtype=np.uint8)
    lines = np.concatenate([hexed.reshape(words, 2 * bus_bytes),
                            np.full((words, 1), ord("\n"), dtype=np.uint8)], axis=1)
    path.write_bytes(lines.tobytes())
    return words


def read_hex(path: Path, bus_bytes: int) -> bytes:
    """Parse a $writememh file (comments and ``@addr`` lines allowed) into little-endian bytes."""
    out = bytearray()
    addr = 0
    for raw in path.read_text().split("\n"):
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        for tok in line.split():
            if tok.startswith("@"):
                addr = int(tok[1:], 16)
                continue
            end = (addr + 1) * bus_bytes
            if len(out) < end:
                out.extend(bytes(end - len(out)))
            out[addr * bus_bytes:end] = int(tok.replace("_", ""), 16).to_bytes(bus_bytes,
                                                                               "little")
            addr += 1
    return bytes(out)


def read_marks(path: Path) -> list[tuple[int, int]]:
    marks = []
    if path.exists():
        for line in path.read_text().splitlines():
            parts = line.split()
            if len(parts) >= 2:
                marks.append((int(parts[0]), int(parts[1])))
    return marks
