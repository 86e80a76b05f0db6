"""Progress of a long command on stderr: one stage at a time, with the seconds so far.

On a terminal the stage's line is redrawn every second (``[verilog] elaborating ... 12 s``);
when stderr is not a terminal (logs, CI) a stage prints one line when it starts and one when
it ends, so nothing garbles a log. Commands turn it off with ``--json``.
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType

__all__ = ["Stage"]


class Stage:
    """``with Stage("verilog", "elaborating the core", enabled=not args.json): ...``"""

    def __init__(self, command: str, what: str, *, enabled: bool = True,
                 eta_s: float | None = None) -> None:
        self._prefix = f"[{command}] {what}"
        self._enabled = enabled
        self._eta = eta_s
        self._tty = enabled and sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._t0 = 0.0

    def _line(self) -> str:
        spent = time.monotonic() - self._t0
        eta = f", ETA ~{max(self._eta - spent, 0):.0f} s" if self._eta else ""
        return f"{self._prefix} ... {spent:.0f} s{eta}"

    def _tick(self) -> None:
        while not self._stop.wait(1.0):
            sys.stderr.write("\r\033[K" + self._line())
            sys.stderr.flush()

    def __enter__(self) -> Stage:
        self._t0 = time.monotonic()
        if self._enabled:
            sys.stderr.write(self._line() if self._tty else f"{self._prefix} ...\n")
            sys.stderr.flush()
        if self._tty:
            self._thread = threading.Thread(target=self._tick, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self._enabled:
            return
        how = "done" if exc_type is None else "failed"
        end = f"{self._prefix}: {how} in {time.monotonic() - self._t0:.1f} s\n"
        sys.stderr.write(("\r\033[K" + end) if self._tty else end)
        sys.stderr.flush()
