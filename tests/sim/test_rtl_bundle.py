"""L2 on compiled bundles: a layer compiled by sw/compiler, written by sw/bundle, run through
``run_bundle`` on the generated 'tiny' core; every layer output equals the functional level
(L1) and the golden level (L0) element for element, and the cycle count equals the cycle
model's."""

from __future__ import annotations

import numpy as np
import pytest

from shiftbook.config import PRESETS
from shiftbook.sim.rtl import runner

pytestmark = pytest.mark.rtl

TINY = PRESETS["tiny"]

LAYERS = {
    "conv3x3-groups": dict(op="conv", cin=3, cout=5, kernel=3, stride=1, padding=None,
                           size=6, seed=4),
    "conv-stride2-norelu": dict(op="conv", cin=4, cout=4, kernel=3, stride=2,
                                       padding=None, size=7, seed=5, relu=False),
    "conv-residual": dict(op="conv", cin=4, cout=4, kernel=3, stride=1, padding=None,
                          size=5, seed=6, residual=True),
    # 6 input bands, 3 groups whose weights exceed WGT: groups in blocks of one (each weight
    # row read once, the bands run backwards in odd blocks)
    "conv-group-blocks": dict(op="conv", cin=64, cout=6, kernel=3, stride=2, padding=None,
                              size=12, seed=7),
    # two-term weights (issue 16): both terms at the top exponent the accumulator allows,
    # saturating; a residual layer; and one whose terms run in several channel chunks
    "two-term-extreme": dict(op="conv", cin=6, cout=5, kernel=3, stride=1, padding=None,
                             size=5, seed=8, weights="two-term", weights_dist="extreme",
                             input_dist="extreme", relu=False),
    "two-term-residual": dict(op="conv", cin=4, cout=4, kernel=3, stride=1, padding=None,
                              size=5, seed=9, residual=True, weights="two-term"),
    "two-term-chunks": dict(op="conv", cin=64, cout=3, kernel=3, stride=1, padding=None,
                            size=4, seed=10, weights="two-term"),
}


@pytest.mark.parametrize("name", list(LAYERS))
def test_bundle_matches_functional_and_golden(tiny_core, tmp_path, name):
    from shiftbook.sim.compare import compare_memory
    from shiftbook.sim.functional import run_program
    from shiftbook.sw.bundle import load_bundle, write_bundle
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer, run_graph
    from shiftbook.timing import estimate

    kw = dict(LAYERS[name])
    layer = random_layer(kw.pop("op"), kw.pop("cin"), kw.pop("cout"), kw.pop("kernel"),
                         kw.pop("stride"), kw.pop("padding"), kw.pop("size"), **kw)
    prog = compile_graph(layer.graph, TINY, layer.inputs)
    if name == "conv-group-blocks":
        t = prog.layers[0].tiles
        assert len(t.bands) > 1 and t.group_block < t.groups
        assert prog.layers[0].weight_bytes_read == prog.layers[0].weight_bytes
    if name.startswith("two-term"):
        t = prog.layers[0].tiles
        assert t.terms == 2 and len(t.chunks) >= 2
        if name == "two-term-chunks":
            assert len(t.chunks) >= 4
    path = write_bundle(prog, layer.graph, tmp_path / "bundle")
    bundle = load_bundle(path, TINY)

    res = runner.run_bundle(path, config=TINY, timeout_cycles=2_000_000)
    fun = run_program(TINY, bundle.memory)
    cmp = compare_memory(bundle.manifest, fun.memory, res.memory)
    assert cmp.bit_exact, str(cmp)
    golden = run_graph(bundle.graph(), bundle.inputs())
    for out in bundle.manifest.outputs:
        assert np.array_equal(bundle.read_tensors(res.memory)[out], golden[out])
    # one MARK per layer, ids = layer indices, in order
    assert [m[0] for m in res.marks] == [lay.index for lay in bundle.layers]
    # the compiler's ideal cycles are a lower bound; the functional model is close to RTL
    assert res.cycles >= bundle.ideal_cycles
    assert 0.7 < res.cycles / fun.cycles < 1.4
    # the cycle model (shiftbook.timing) is exact against the RTL
    assert estimate(bundle).total == res.cycles
