"""Waveforms of one layer (issue 18): the traced core writes an FST limited to the layer's MARK
window, a valid FST whose header's start and end times are that window, with a GTKWave save
file next to it. The traced 'tiny' build is cached like the untraced one (~2 min once)."""

from __future__ import annotations

import pytest

from shiftbook.config import PRESETS
from shiftbook.sim.rtl import runner
from shiftbook.sim.rtl.errors import RtlError
from shiftbook.sim.rtl.waves import CLOCK_PERIOD_PS, fst_header, layer_window, write_layer_waves

pytestmark = pytest.mark.rtl

TINY = PRESETS["tiny"]


def test_layer_window_from_marks():
    marks = [(0, 100), (1, 250), (2, 400)]
    assert layer_window(marks, 0) == (None, 0)
    assert layer_window(marks, 2) == (1, 2)
    with pytest.raises(RtlError, match="MARK 7 never appeared"):
        layer_window(marks, 7)


def test_fst_header_refuses_other_files(tmp_path):
    (tmp_path / "x.fst").write_bytes(b"$date\n today\n$end\n" * 20)
    with pytest.raises(RtlError, match="not an FST"):
        fst_header(tmp_path / "x.fst")


def test_one_layer_waveform_covers_its_window(tiny_core, tmp_path):
    from shiftbook.sw.bundle import load_bundle, write_bundle
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer

    layer = random_layer("conv", 3, 4, 3, 1, None, 5, seed=4)
    prog = compile_graph(layer.graph, TINY, layer.inputs)
    bundle = load_bundle(write_bundle(prog, layer.graph, tmp_path / "bundle"), TINY)
    plain = runner.run_image(TINY, bundle.memory, timeout_cycles=2_000_000)
    lay = bundle.layers[0]
    rec = write_layer_waves(TINY, bundle.memory, lay, tmp_path / "waves", marks=plain.marks,
                            timeout_cycles=2_000_000)
    assert rec["marks"] == [list(m) for m in plain.marks]   # the traced run is the same run
    mark_cycle = dict(plain.marks)[lay.index]
    assert rec["to_cycle"] == mark_cycle       # ends at the layer's MARK
    assert rec["from_cycle"] == 0               # first layer: from the start
    hdr = fst_header(rec["fst"])
    assert (hdr.start_time, hdr.end_time) == (rec["from_time_ps"], rec["to_time_ps"])
    assert hdr.timescale_exp == -12 and hdr.vars > 0 and hdr.value_change_blocks >= 1
    # the window spans the layer's cycles (one clock period each), no more than a few extra
    span = (hdr.end_time - hdr.start_time) / CLOCK_PERIOD_PS
    assert mark_cycle - 2 <= span <= mark_cycle + 8, (span, mark_cycle)
    gtkw = (tmp_path / "waves" / f"{lay.name}.gtkw").read_text()
    assert f'[dumpfile] "{tmp_path / "waves"}' in gtkw and "mark_id" in gtkw
    assert "-controller" in gtkw and ".core.compute.array.pe_0_0." in gtkw
    # a second traced run reuses the cached traced build
    assert runner.build(TINY, waves=True) == runner.build(TINY, waves=True)


def test_simulate_waves_cli_and_no_finish_line(tiny_core, tmp_path, capfd):
    """`simulate --level rtl --waves DIR --layer NAME --json`: one JSON object whose "waves"
    names the FST; the simulator prints no `- :0: Verilog $finish` line (sim_main.cpp)."""
    import json

    from shiftbook.cli import main
    from shiftbook.sw.bundle import write_bundle
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer

    layer = random_layer("conv", 3, 4, 3, 1, None, 5, seed=4)
    path = write_bundle(compile_graph(layer.graph, TINY, layer.inputs), layer.graph,
                        tmp_path / "bundle")
    capfd.readouterr()
    rc = main(["simulate", str(path), "--level", "rtl", "--waves", str(tmp_path / "w"),
               "--layer", "layer0", "--json"])
    out, err = capfd.readouterr()
    assert rc == 0, err
    rec = json.loads(out)
    assert rec["waves"]["layer"] == "layer0" and fst_header(rec["waves"]["fst"]).vars > 0
    from shiftbook.isa import Insn, Opcode, encode_program

    image = encode_program([Insn(Opcode.MARK, {"id": 3}), Insn(Opcode.END)])
    res = runner.run_image(TINY, image, timeout_cycles=10_000, progress=True)
    out, err = capfd.readouterr()
    assert res.status == "done" and "[rtl] done" in out
    assert "Verilog $finish" not in out + err
