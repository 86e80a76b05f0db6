"""SIGTERM or Ctrl-C to a build stops every tool it started (no orphans writing into -o)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

CHILD = r"""
import os, signal, sys
from pathlib import Path
from shiftbook.cli import _on_sigterm
from shiftbook.boards.build import _run_script
signal.signal(signal.SIGTERM, _on_sigterm)
try:
    # a stand-in build script whose "tool" (sleep) runs in the background, as nextpnr does
    _run_script(["sh", "-c", "sleep 120 & echo $! > tool.pid; wait"], Path(sys.argv[1]),
                dict(os.environ), None)
except KeyboardInterrupt:
    sys.exit(143)
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def test_sigterm_stops_the_tools_of_a_build(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(tmp_path)])
    pidfile = tmp_path / "tool.pid"
    deadline = time.monotonic() + 60
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    tool = int(pidfile.read_text())
    assert _alive(tool)
    os.kill(proc.pid, signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    deadline = time.monotonic() + 10
    while _alive(tool) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(tool), "the build's tool outlived the interrupted command"


def test_interrupt_during_startup_is_one_line(tmp_path):
    """SIGINT while the CLI starts (imports, parsing) gives one line, no traceback."""
    code = ("import signal, sys; from shiftbook import cli; "
            "cli.build_parser = lambda: (_ for _ in ()).throw(KeyboardInterrupt()); "
            "sys.exit(cli.main(['layer']))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 130
    assert r.stderr.strip() == "shiftbook: interrupted"
