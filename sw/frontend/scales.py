"""Activation scales of the integer IR: the calibration rule (:func:`act_frac`) and float
images -> int8 input values (:func:`quantize_input`), ``real = q * 2**-frac``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from shiftbook import numerics as nx

__all__ = ["act_frac", "quantize_input", "round_half_up", "MAX_FRAC"]

#: Largest activation ``frac`` the calibration rule gives (also bounds the frontend's
#: accumulator-fitting loop).
MAX_FRAC = 40


def act_frac(max_abs: float, cap: int | None = None) -> int:
    """The calibration rule: the largest ``frac`` with ``max_abs * 2**frac <= 127`` (so the
    largest observed value rounds into int8), at most ``cap``. ``max_abs == 0`` gives ``cap``
    (or 0)."""
    if not max_abs > 0 or not math.isfinite(max_abs):
        return 0 if cap is None else int(cap)
    f = math.floor(math.log2(127.0 / max_abs))
    while max_abs * 2.0**f > 127.0:
        f -= 1
    while max_abs * 2.0 ** (f + 1) <= 127.0:
        f += 1
    f = min(f, MAX_FRAC)
    return f if cap is None else min(f, int(cap))


def quantize_input(x: Any, frac: int) -> np.ndarray:
    """Float images -> int8 values at scale ``2**-frac``: round half up, saturate."""
    a = torch.as_tensor(x).detach().cpu().to(torch.float64).numpy()
    q = np.floor(a * 2.0**frac + 0.5)
    q = np.clip(q, -(2.0**62), 2.0**62).astype(np.int64)
    return np.asarray(nx.saturate(q), dtype=np.int64)


def round_half_up(v: np.ndarray) -> np.ndarray:
    """Float values -> int64, rounded half up (the rule for biases at accumulator scale)."""
    return np.floor(np.asarray(v, dtype=np.float64) + 0.5).astype(np.int64)
