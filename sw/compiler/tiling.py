"""Tiling helpers shared by the convolution and pooling planners (``conv_plan.py``,
``pool.py``): output bands that fit the output buffer and the input rows each band reads."""

from __future__ import annotations

from shiftbook.config import CoreConfig
from shiftbook.placement import Placement

__all__ = ["CompileError", "round_up", "out_band_limit", "input_bands"]


class CompileError(ValueError):
    """A layer the compiler cannot map onto the configured core (the message names it)."""


def round_up(v: int, m: int) -> int:
    """``v`` rounded up to a multiple of ``m``."""
    return -(-v // m) * m


def out_band_limit(name: str, y: Placement, cfg: CoreConfig) -> tuple[int, int]:
    """OUT slots per bank and the most output rows a band may hold: two slots if a band of at
    least one output row fits half of OUT, else one (refused if not even one row fits)."""
    n_out, bo_max = 2, (cfg.obuf_bytes // 2) // y.pitch
    if bo_max == 0:
        n_out, bo_max = 1, cfg.obuf_bytes // y.pitch
    if bo_max == 0:
        raise CompileError(f"layer {name!r}: an output row of {y.pitch} bytes does not fit "
                           f"the {cfg.obuf_bytes}-byte output buffer")
    return n_out, bo_max


def input_bands(bands: list[tuple[int, int]], H: int, KH: int, sy: int,
                pt: int) -> list[tuple[int, int]]:
    """Input rows ``[lo, hi)`` that each output band ``[o0, o1)`` reads (padding excluded)."""
    out = []
    for o0, o1 in bands:
        lo = max(0, o0 * sy - pt)
        hi = min(H, (o1 - 1) * sy - pt + KH)
        out.append((lo, max(lo, hi)))
    return out
