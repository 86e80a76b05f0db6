"""Layer-by-layer comparison: exact equality and the first differing layer/tile/element."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from shiftbook.config import PRESETS
from shiftbook.manifest import TileMeta
from shiftbook.sim.compare import compare_memory, compare_tensors, tile_of
from shiftbook.sim.functional import run_program
from shiftbook.sw.compiler import compile_graph
from shiftbook.sw.reference import random_layer, run_graph


@pytest.fixture(scope="module")
def run():
    cfg = PRESETS["tiny"]
    layer = random_layer("conv", 3, 5, 3, 1, None, 7, seed=1)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    golden = run_graph(layer.graph, layer.inputs)
    return prog, golden


def test_equal_is_bit_exact(run):
    prog, golden = run
    res = compare_tensors(prog.layers, golden, {k: v.copy() for k, v in golden.items()})
    assert res.bit_exact and res.mismatches == 0 and res.first is None
    assert str(res).startswith("bit-exact")


def test_first_mismatch_names_layer_tile_and_element(run):
    prog, golden = run
    got = {k: v.copy() for k, v in golden.items()}
    got["y"][3, 4, 5] += 1
    got["y"][4, 6, 6] -= 1
    res = compare_tensors(prog.layers, golden, got)
    assert not res.bit_exact and res.mismatches == 2
    m = res.first
    assert (m.layer, m.layer_name, m.tensor, m.c, m.y, m.x) == (0, "layer0", "y", 3, 4, 5)
    assert (m.expected, m.got) == (int(golden["y"][3, 4, 5]), int(golden["y"][3, 4, 5]) + 1)
    # tiny: 2x2 array -> channel 3 is in group 1; pixel 4*7+5 = 33 -> tile 16, PE row 1.
    assert (m.group, m.band, m.tile, m.pixel) == (1, 0, 16, 1)
    assert "expected" in str(res) and "tile 16" in str(res)
    assert res.to_dict()["first_mismatch"]["c"] == 3


def test_tile_of_with_bands():
    lay = SimpleNamespace(tiles=TileMeta(rows=4, cols=8, groups=2, out_w=10,
                                         bands=((0, 3), (3, 6)), chunks=()))
    assert tile_of(lay, 9, 4, 2) == {"group": 1, "band": 1, "tile": 3, "pixel": 0}


def test_compare_memory_images(run):
    prog, golden = run
    res = run_program(prog.config, prog.memory)
    assert compare_memory(prog, res.memory, res.memory).bit_exact
    bad = bytearray(res.memory)
    bad[prog.tensors["y"].addr] ^= 0x80
    r = compare_memory(prog, res.memory, bytes(bad))
    assert r.mismatches == 1 and (r.first.c, r.first.y, r.first.x) == (0, 0, 0)
