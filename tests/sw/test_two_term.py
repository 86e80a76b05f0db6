"""Two-term shift weights (issue 16 item 1): values, codes, IR, weight blob layout, sizes, and the
functional simulator equal to the golden reference on every core shape."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shiftbook import numerics as nx
from shiftbook import weights
from shiftbook.config import PRESETS, CoreConfig
from shiftbook.sim.functional import run_program
from shiftbook.sw.compiler import compile_graph, unpack_tensor
from shiftbook.sw.compiler.conv import conv_weight_bytes
from shiftbook.sw.ir import Conv2d, Graph, IRError
from shiftbook.sw.reference import random_layer, run_graph
from shiftbook.timing import estimate_program

EB = 4
ZERO = nx.zero_code(EB)


def test_grid_is_every_sum_of_two_terms():
    one = {0} | {s * (1 << e) for s in (1, -1) for e in range(16)}
    want = sorted({a + b for a in one for b in one})
    assert nx.two_term_grid(EB).tolist() == want
    assert len(want) == 457 and want[-1] == 1 << 16


def test_split_round_trips_and_is_canonical():
    grid = nx.two_term_grid(EB)
    c1, c2 = nx.split_two_term(grid, EB)
    assert np.array_equal(nx.decode_terms(c1, c2, EB), grid)
    v1, v2 = nx.decode_shift(c1, EB), nx.decode_shift(c2, EB)
    assert np.all(np.abs(v1) >= np.abs(v2))
    # one-term values keep a zero second term; zero is two zero codes
    single = np.isin(grid, nx.decode_shift(np.arange(64), EB))
    assert np.all(c2[single] == ZERO)
    assert nx.split_two_term([0], EB)[0][0] == ZERO
    assert nx.decode_shift(nx.split_two_term([7], EB)[1], EB).tolist() == [-1]   # 8 - 1
    with pytest.raises(nx.NumericsError, match="11 is not"):
        nx.split_two_term([3, 11], EB)


def test_round_to_grid_nearest_and_ties_away_from_zero():
    grid = nx.two_term_grid(EB)
    assert nx.round_to_grid([10.9, 11.0, -11.0, 0.49, 1e9, -1e9], grid).tolist() == \
        [10, 12, -12, 0, 1 << 16, -(1 << 16)]


def _two_term_graph() -> Graph:
    return random_layer("conv", 6, 9, 3, seed=3, size=7, weights="two-term").graph


def test_ir_round_trip_and_checks(tmp_path):
    g = _two_term_graph()
    g.save(tmp_path)
    h = Graph.load(tmp_path)
    o, p = g.ops[0], h.ops[0]
    assert p.terms == 2 and np.array_equal(o.weight2, p.weight2)
    assert np.array_equal(o.values(), p.values())
    assert not np.array_equal(o.values(), nx.decode_shift(o.weight, EB))
    with pytest.raises(IRError, match="weight2 has shape"):
        Conv2d("c", "x", "y", weight=o.weight, weight2=o.weight[:1])
    with pytest.raises(IRError, match="weight2 codes outside"):
        Conv2d("c", "x", "y", weight=o.weight, weight2=o.weight + 64)
    # one-term layers serialise exactly as before: no weight2 key
    one = random_layer("conv", 6, 9, 3, seed=3, size=7).graph
    (tmp_path / "one").mkdir()
    one.save(tmp_path / "one")
    assert "weight2" not in (tmp_path / "one" / "ir.json").read_text()


def test_weight_blob_is_first_term_rows_then_second_per_group():
    cfg = CoreConfig(rows=2, cols=4, name="t")
    rng = np.random.default_rng(0)
    w1, w2 = rng.integers(0, 64, (6, 3, 2, 2)), rng.integers(0, 64, (6, 3, 2, 2))
    op = Conv2d("c", "x", "y", weight=w1, weight2=w2)
    rows = np.frombuffer(conv_weight_bytes(op, cfg), np.uint8).reshape(2, 2, 12, -1)
    for g in range(2):
        for t, w in enumerate((w1, w2)):
            want = np.full((4, 12), ZERO)
            part = w[4 * g:4 * g + 4].reshape(-1, 12)
            want[:len(part)] = part
            assert np.array_equal(rows[g, t, :, :4].T, want)
    # the multiplier PE stores the summed value as one int8 row set
    mult = dataclasses.replace(cfg, pe="mult", name="m")
    op2 = Conv2d("c", "x", "y", weight=np.full((4, 3, 2, 2), 3), weight2=np.full((4, 3, 2, 2), 2))
    vals = np.frombuffer(conv_weight_bytes(op2, mult), np.int8).reshape(1, 12, -1)[0, :, :4]
    assert np.all(vals == 8 + 4)


def test_sizes_are_hand_computed():
    """A 5x3x3x3 two-term layer stores 135 weights x 2 codes x 1 byte; the compiled layer's
    footprint and its weight blob (2 groups of 4 columns on an 8-byte WGT row) say so."""
    shape = (5, 3, 3, 3)
    raw = weights.RawWeights(np.full(shape, ZERO), EB, np.full(shape, ZERO))
    assert raw.footprint().to_dict() == {"index_bits": 0, "codebook_bits": 0,
                                         "raw_bits": 2 * 8 * 135, "bits": 2160, "bytes": 270}
    lay = random_layer("conv", 3, 5, 3, seed=1, size=6, weights="two-term")
    cfg = CoreConfig(rows=2, cols=4, name="t")
    prog = compile_graph(lay.graph, cfg, lay.inputs)
    meta = prog.layers[0]
    assert meta.weights.footprint["raw_bits"] == 2160
    # 2 groups x 2 terms x 27 reduction rows x wbuf_row_bytes
    assert meta.weight_bytes == 2 * 2 * 27 * cfg.wbuf_row_bytes
    assert meta.tiles.terms == 2


CONFIGS = {
    "tiny": PRESETS["tiny"],
    "small": PRESETS["small"],
    "mult": CoreConfig(rows=4, cols=4, pe="mult", name="mult"),
    "tinybuf": CoreConfig(rows=2, cols=4, bus_bytes=4, abuf_bytes=256, wbuf_rows=32,
                          bbuf_rows=2, obuf_bytes=64, mem_latency=3, name="tinybuf"),
}
# (op, cin, cout, kernel, stride, padding, size, weights, input)
CASES = {
    "3x3": ("conv", 6, 9, 3, 1, None, 7, "normal", "normal"),
    "27to5s2": ("conv", 27, 5, 3, 2, 1, 7, "sparse", "uniform"),
    "linear": ("linear", 37, 11, 1, 1, 0, 1, "normal", "normal"),
    "zero_w": ("conv", 5, 6, 3, 1, 1, 5, "zero", "uniform"),
    "extreme": ("conv", 9, 7, 3, 1, 1, 6, "extreme", "extreme"),
}


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("case", list(CASES))
def test_functional_matches_golden_two_term(case, cfg_name):
    cfg = CONFIGS[cfg_name]
    op, cin, cout, k, s, p, size, wd, xd = CASES[case]
    lay = random_layer(op, cin, cout, k, s, p, size, seed=2, exp_bits=cfg.exp_bits,
                       acc_bits=cfg.acc_bits, max_exp=5 if cfg.pe == "mult" else None,
                       weights_dist=wd, input_dist=xd, weights="two-term")
    golden = run_graph(lay.graph, lay.inputs)
    prog = compile_graph(lay.graph, cfg, lay.inputs)
    res = run_program(cfg, prog.memory)
    assert np.array_equal(unpack_tensor(res.memory, prog.tensors["y"]), golden["y"])
    assert res.cycles == estimate_program(cfg, prog.insns).total


def test_second_term_doubles_the_reduction_not_the_rest():
    """On the shift PE a two-term layer runs twice the COMPUTE steps of the same layer with
    one term, reading its activations once; the multiplier PE runs it like one term."""
    cfg = PRESETS["small"]
    two = random_layer("conv", 16, 16, 3, seed=0, size=8, weights="two-term")
    one = random_layer("conv", 16, 16, 3, seed=0, size=8)
    assert np.array_equal(two.graph.ops[0].weight, one.graph.ops[0].weight)
    p2, p1 = (compile_graph(x.graph, cfg, x.inputs) for x in (two, one))
    c2, c1 = (estimate_program(cfg, p.insns).total for p in (p2, p1))
    s2, s1 = (p.layers[0].computes for p in (p2, p1))
    assert s2 == 2 * s1
    assert 1.5 * c1 < c2 < 2.2 * c1
    mult = CONFIGS["mult"]
    m2 = random_layer("conv", 16, 16, 3, seed=0, size=8, weights="two-term", max_exp=5)
    m1 = random_layer("conv", 16, 16, 3, seed=0, size=8, max_exp=5)
    q2, q1 = (compile_graph(x.graph, mult, x.inputs) for x in (m2, m1))
    assert q2.layers[0].computes == q1.layers[0].computes
