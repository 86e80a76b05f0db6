"""The frontend's error type."""

from __future__ import annotations

__all__ = ["FrontendError"]


class FrontendError(ValueError):
    """A model the frontend cannot lower (the message names the op and where it is)."""
