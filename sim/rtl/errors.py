"""The RTL layer's exceptions (one line a user can act on each)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shiftbook.sim.rtl.runner import RtlResult

__all__ = ["RtlError", "RtlBuildError", "RtlRunError", "RtlTimeoutError"]


class RtlError(RuntimeError):
    """An RTL simulation problem; the message is one line a user can act on."""


class RtlBuildError(RtlError):
    """Verilator or the C++ compiler failed; ``log`` is the build log's path."""

    def __init__(self, msg: str, log: Path | None = None) -> None:
        super().__init__(msg)
        self.log = log


class RtlRunError(RtlError):
    """The run did not end in ``done`` (core error, memory fault, simulator failure).

    ``result`` holds what was measured (memory image, cycles, marks), when there is one.
    """

    def __init__(self, msg: str, result: RtlResult | None = None) -> None:
        super().__init__(msg)
        self.result = result


class RtlTimeoutError(RtlRunError):
    """``done`` never rose within the cycle limit."""
