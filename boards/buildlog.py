"""Stream a board build's output into ``build.log`` while it runs, and say which stage it is in.

The build script's stdout and stderr, and the tools' own log files (Yosys writes ``-l
top.rpt``, nextpnr ``--log top.tim``), are appended to ``build.log`` as they grow, each under a
``==== <file> ====`` line when the source changes. The stage is the first step whose output
file does not exist yet (``yosys`` until ``top.json`` appears, then ``nextpnr``, then the
packer); every change of stage is reported through ``say`` with the seconds so far.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

__all__ = ["LogStreamer"]


class LogStreamer:
    """Copies a running build's outputs into ``cwd/build.log`` and reports its stage.

    Parameters
    ----------
    cwd:
        The build directory (where the script runs and build.log goes).
    steps:
        ``(tool, output file)`` in order, as in ``boards.build._STEPS``.
    tool_logs:
        Log files the tools write in ``cwd`` (tailed into build.log).
    say:
        Receives ``"stage k/n: tool (t s)"`` lines; None: silent.
    """

    def __init__(self, cwd: Path, steps: list[tuple[str, str]], tool_logs: list[str],
                 say: Callable[[str], None] | None = None, poll_s: float = 0.5) -> None:
        self._cwd = cwd
        self._steps = steps
        self._logs = {name: 0 for name in tool_logs}
        self._say = say
        self._poll_s = poll_s
        self._lock = threading.Lock()
        self._last_source = ""
        self._log = open(cwd / "build.log", "w", encoding="utf-8", errors="replace")  # noqa: SIM115
        self._stage = -1
        self._t0 = time.monotonic()
        self._stop = threading.Event()
        self.stdout: list[str] = []
        self.stderr: list[str] = []

    def _append(self, source: str, text: str) -> None:
        if not text:
            return
        with self._lock:
            if source != self._last_source:
                self._log.write(f"==== {source} ====\n")
                self._last_source = source
            self._log.write(text if text.endswith("\n") else text + "\n")
            self._log.flush()

    def _pipe(self, stream: object, sink: list[str], source: str) -> None:
        for line in iter(stream.readline, ""):  # type: ignore[attr-defined]
            sink.append(line)
            self._append(source, line)

    def _poll(self) -> None:
        for name, pos in list(self._logs.items()):
            p = self._cwd / name
            try:
                with open(p, encoding="utf-8", errors="replace") as f:
                    f.seek(pos)
                    text = f.read()
                    self._logs[name] = f.tell()
            except OSError:
                continue
            self._append(name, text)
        stage = next((i for i, (_, out) in enumerate(self._steps)
                      if not (self._cwd / out).exists()), len(self._steps) - 1)
        if stage != self._stage and self._say is not None:
            tool = self._steps[stage][0]
            self._say(f"stage {stage + 1}/{len(self._steps)}: {tool} "
                      f"({time.monotonic() - self._t0:.0f} s so far)")
        self._stage = stage

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_s):
            self._poll()

    def run(self, proc: subprocess.Popen, timeout_s: float | None) -> None:
        """Stream ``proc`` (stdout and stderr pipes, text mode) until it exits; raises
        ``subprocess.TimeoutExpired`` after ``timeout_s`` (the caller stops the process)."""
        readers = [threading.Thread(target=self._pipe, args=(proc.stdout, self.stdout,
                                                             "build script stdout"),
                                    daemon=True),
                   threading.Thread(target=self._pipe, args=(proc.stderr, self.stderr,
                                                             "build script stderr"),
                                    daemon=True)]
        self._readers = readers
        watcher = threading.Thread(target=self._watch, daemon=True)
        for t in (*readers, watcher):
            t.start()
        self._poll()
        try:
            proc.wait(timeout=timeout_s)
        finally:
            self._stop.set()
            watcher.join()
        self.drain()

    def drain(self) -> None:
        """Wait for the pipes to close (the script and its tools have ended), copy what is
        left of the logs, close build.log."""
        for t in getattr(self, "_readers", []):
            t.join(timeout=5)
        self._poll()
        with self._lock:
            self._log.close()
