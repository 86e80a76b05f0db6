"""Issue 21 item 6: a failing board tool's message says what failed even when its log is
empty (boards/build.py)."""

from __future__ import annotations

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import io, wiring

from shiftbook.boards import build as bb
from shiftbook.boards.targets import get_target


class _Blink(wiring.Component):
    def __init__(self) -> None:
        super().__init__({})

    def elaborate(self, platform) -> Module:
        m = Module()
        ctr = Signal(8)
        m.d.sync += ctr.eq(ctr + 1)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(ctr[-1])
        return m


def test_silent_failing_yosys_is_named(tmp_path) -> None:
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("yosys", "nextpnr", "icepack"):
        f = fake / name
        f.write_text("#!/bin/sh\nexit 1\n")
        f.chmod(0o755)
    tools = {"YOSYS": str(fake / "yosys"), "NEXTPNR_ICE40": str(fake / "nextpnr"),
             "ICEPACK": str(fake / "icepack")}
    with pytest.raises(bb.BuildError) as e:
        bb.build_design(get_target("icebreaker"), _Blink(), tmp_path / "out", tools=tools)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("yosys produced no shiftbook_board.json")
    assert f"build.log is empty: yosys ({fake / 'yosys'}) printed nothing" in msg
