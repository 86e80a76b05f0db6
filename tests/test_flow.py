"""The library API (shiftbook.flow): each function returns what its command prints."""

from __future__ import annotations

import numpy as np
import pytest

from shiftbook import flow
from shiftbook.manifest import LayerMeta
from shiftbook.outputs import OutputError
from shiftbook.sim.network import SimulateError


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "r8"
    return flow.compile("resnet8", config="tiny", calib=1, seed=3, output=out)


def test_compile_returns_typed_layers(compiled):
    assert compiled.bundle is not None and (compiled.bundle / "manifest.json").is_file()
    assert all(isinstance(lay, LayerMeta) for lay in compiled.layers)
    assert compiled.ideal_cycles == sum(lay.ideal_cycles for lay in compiled.layers)
    b = flow.load(compiled.bundle)
    assert b.layers == compiled.layers and b.config == compiled.config
    assert flow.load(compiled.bundle / "manifest.json").layers == b.layers


def test_compile_without_output_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = flow.compile("resnet8", config="tiny", calib=1)
    assert c.bundle is None and c.program.insns and list(tmp_path.iterdir()) == []


def test_compile_reports_progress_by_layer():
    """``progress(done, total, layer)`` once per quantized layer, in order, ending at total."""
    calls = []
    c = flow.compile("resnet8", config="tiny", calib=1,
                     progress=lambda i, n, name: calls.append((i, n, name)))
    n = calls[-1][1]
    assert [i for i, _, _ in calls] == list(range(1, n + 1)) and {t for _, t, _ in calls} == {n}
    assert [name for _, _, name in calls if name in {op.name for op in c.graph.ops}] == \
        [op.name for op in c.graph.ops]


def test_compile_refuses_a_user_directory_before_work(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(OutputError):
        flow.compile("resnet8", config="tiny", calib=1, output=tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_run_levels_agree_and_name_mismatches(compiled):
    fun = flow.run(compiled.bundle, "functional", seed=5)
    gold = flow.run(compiled.bundle, "golden", seed=5)
    assert fun.bit_exact and gold.bit_exact
    assert [lay.name for lay in fun.layers] == [lay.name for lay in compiled.layers]
    est = flow.estimate(compiled.bundle)
    assert fun.cycles == est.total
    assert [lay.cycles for lay in fun.layers] == [lc.cycles for lc in est.layers]
    # compare: a flipped element is named with its layer and position
    got = {k: v.copy() for k, v in fun.got.items()}
    first = compiled.layers[1]
    got[first.output][0, 0, 0] += 1
    cmp = flow.compare(compiled, fun.expected, got)
    assert not cmp.bit_exact and cmp.first.layer == first.index
    assert (cmp.first.c, cmp.first.y, cmp.first.x) == (0, 0, 0)


def test_run_takes_arrays_and_refuses_bad_ones(compiled):
    b = flow.load(compiled.bundle)
    shape = b.tensors[b.manifest.inputs[0]].shape
    x = np.zeros(shape, np.int64)
    assert flow.run(b, "functional", input=x).bit_exact
    with pytest.raises(SimulateError, match="shape"):
        flow.run(b, "golden", input=np.zeros((1, 2, 3)))
    with pytest.raises(SimulateError, match="unknown level"):
        flow.run(b, "gate")


def test_estimate_energy_report(compiled, tmp_path):
    rec = flow.estimate_record(compiled.bundle)
    assert rec["total"]["model"] == flow.estimate(compiled.bundle).total
    en = flow.energy(compiled.bundle)
    assert en.totals["shiftbook"] > 0 and en.ratios()["shiftbook"] == 1.0
    rep = flow.report(compiled.bundle, tmp_path / "rep")
    assert (rep.path / "report.html").is_file()
    assert rep.record["cycles"]["total"] == rec["total"]["model"]
