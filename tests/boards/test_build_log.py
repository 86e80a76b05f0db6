# amaranth: UnusedElaboratable=no
"""`build` streams the tools' output into build.log while they run and says which stage it is
in (issue 18), with stand-in tools (no YoWASP run)."""

from __future__ import annotations

from pathlib import Path

from test_board_build import _Blink, _fake_tools

from shiftbook.boards import build as bb
from shiftbook.boards.targets import get_target


def test_build_log_streams_tool_logs_and_stages(tmp_path) -> None:
    tools = _fake_tools(tmp_path, tmp_path / "calls")
    for exe in tools.values():          # slow enough for the stage poller to see each step
        p = Path(exe)
        p.write_text(p.read_text().replace("#!/bin/sh\n", "#!/bin/sh\nsleep 0.8\necho "
                                           f"running-{p.name}\n", 1))
    heard: list[str] = []
    bb.build_design(get_target("icebreaker"), _Blink(20), tmp_path / "out", tools=tools,
                    log=heard.append)
    stages = [m for m in heard if m.startswith("stage ")]
    assert [s.split(" (")[0] for s in stages] == [
        "stage 1/3: yosys", "stage 2/3: nextpnr-ice40", "stage 3/3: icepack"], heard
    log = (tmp_path / "out" / "build.log").read_text()
    assert "running-yosys" in log and "running-icepack" in log
    assert "==== shiftbook_board.rpt ====" in log and "SB_LUT4" in log   # Yosys's own log
