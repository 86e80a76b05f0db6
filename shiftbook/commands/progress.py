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
    """``with Stage("verilog", "elaborating the core", enabled=not args.json): ...``

    Nothing is printed for a stage that ends (or fails) within ``delay_s``: a bad option
    refused at once stays the one error line; a failure after that prints no end line (the
    command's error line follows)."""

    def __init__(self, command: str, what: str, *, enabled: bool = True,
                 eta_s: float | None = None, delay_s: float = 1.0) -> None:
        self._prefix = f"[{command}] {what}"
        self._enabled = enabled
        self._eta = eta_s
        self._delay = delay_s
        self._tty = enabled and sys.stderr.isatty()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._shown = False
        self._t0 = 0.0
        #: where the work is now (e.g. "quantized 12/21 layers (layer3.0.conv2)"); set from
        #: the working thread, shown on the redrawn line
        self.detail = ""

    def _line(self) -> str:
        spent = time.monotonic() - self._t0
        eta = f", ETA ~{max(self._eta - spent, 0):.0f} s" if self._eta else ""
        detail = f": {self.detail}" if self.detail else ""
        return f"{self._prefix}{detail} ... {spent:.0f} s{eta}"

    def _run(self) -> None:
        if self._stop.wait(self._delay):
            return
        self._shown = True
        sys.stderr.write(("\r\033[K" + self._line()) if self._tty else f"{self._prefix} ...\n")
        sys.stderr.flush()
        while self._tty and not self._stop.wait(1.0):
            sys.stderr.write("\r\033[K" + self._line())
            sys.stderr.flush()

    def __enter__(self) -> Stage:
        self._t0 = time.monotonic()
        if self._enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        if not self._shown:
            return
        if exc_type is not None:
            if self._tty:
                sys.stderr.write("\n")
            sys.stderr.flush()
            return
        end = f"{self._prefix}: done in {time.monotonic() - self._t0:.1f} s\n"
        sys.stderr.write(("\r\033[K" + end) if self._tty else end)
        sys.stderr.flush()
