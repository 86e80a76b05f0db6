"""Integer IR: validation and deterministic save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shiftbook import numerics as nx
from shiftbook.sw.ir import Conv2d, Graph, IRError, Linear, TensorSpec
from shiftbook.sw.reference import random_layer


def _graph() -> Graph:
    g = Graph(inputs=["x"], outputs=["y"])
    g.add_tensor(TensorSpec("x", (3, 5, 6), 5))
    g.add_tensor(TensorSpec("y", (4, 2, 3), 2))
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 1 << 6, (4, 3, 3, 3))
    g.add_op(Conv2d("c0", "x", "y", weight=codes, exp_bits=4, bias=[1, -2, 3, -4],
                    shift=[5, 6, 7, 8], relu=True, stride=(2, 2), padding=(1, 0, 0, 1)))
    return g


def test_conv_output_shape_and_macs():
    g = _graph()
    op = g.ops[0]
    assert op.out_hw((5, 6)) == (2, 3)
    assert op.macs(g.tensors) == 4 * 2 * 3 * 3 * 3 * 3


def test_save_load_round_trip_is_exact_and_deterministic(tmp_path):
    g = _graph()
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    g.save(a)
    g.save(b)
    for name in ("ir.json", "ir.npz"):
        assert (a / name).read_bytes() == (b / name).read_bytes()
    h = Graph.load(a)
    o, p = g.ops[0], h.ops[0]
    assert type(p) is Conv2d and p.name == "c0"
    for f in ("weight", "bias", "shift", "w_frac", "res_shift"):
        assert np.array_equal(getattr(o, f), getattr(p, f))
    assert (p.stride, p.padding, p.relu, p.exp_bits) == ((2, 2), (1, 0, 0, 1), True, 4)
    assert h.tensors == g.tensors and h.inputs == ["x"] and h.outputs == ["y"]


def test_linear_is_a_1x1_conv_and_round_trips(tmp_path):
    layer = random_layer("linear", 10, 7, seed=3)
    op = layer.op
    assert isinstance(op, Linear) and op.weight.shape == (7, 10, 1, 1)
    layer.graph.save(tmp_path)
    h = Graph.load(tmp_path)
    assert type(h.ops[0]) is Linear
    assert np.array_equal(h.ops[0].weight, op.weight)


@pytest.mark.parametrize("bad, msg", [
    (dict(weight=np.zeros((4, 2, 3, 3), np.int64)), "channels"),
    (dict(weight=np.zeros((4, 3, 7, 7), np.int64)), "larger than the padded input"),
    (dict(weight=np.full((4, 3, 3, 3), 64)), "weight codes outside"),
    (dict(weight=np.zeros((4, 3, 3, 3), np.int64), bias=[1, 2]), "bias must have shape"),
    (dict(weight=np.zeros((4, 3, 3, 3), np.int64), stride=(0, 1)), "stride"),
])
def test_conv_validation_names_the_problem(bad, msg):
    g = Graph()
    g.add_tensor(TensorSpec("x", (3, 5, 6)))
    g.add_tensor(TensorSpec("y", (4, 3, 4)))
    with pytest.raises(IRError, match=msg):
        g.add_op(Conv2d("c0", "x", "y", **bad))


def test_linear_needs_a_flat_input():
    g = Graph()
    g.add_tensor(TensorSpec("x", (3, 2, 2)))
    g.add_tensor(TensorSpec("y", (4, 2, 2)))
    with pytest.raises(IRError, match=r"must be \(C, 1, 1\)"):
        g.add_op(Linear("fc", "x", "y", weight=np.full((4, 3), nx.zero_code(4))))


def test_unknown_op_kind_and_version_are_refused(tmp_path):
    g = _graph()
    g.save(tmp_path)
    doc = json.loads((tmp_path / "ir.json").read_text())
    doc["ops"][0]["kind"] = "warp_drive"
    (tmp_path / "ir.json").write_text(json.dumps(doc))
    with pytest.raises(IRError, match="unknown op kind 'warp_drive'"):
        Graph.load(tmp_path)
    doc["ir_version"] = 99
    (tmp_path / "ir.json").write_text(json.dumps(doc))
    with pytest.raises(IRError, match="unknown IR version"):
        Graph.load(tmp_path)


def test_graph_validate_checks_dataflow():
    g = _graph()
    g.inputs = []
    with pytest.raises(IRError, match="before anything writes it"):
        g.validate()
