"""Pooling (MaxPool2d / SumPool2d) in the IR, the golden reference and the compiler: every
case compiled and run by the functional simulator must equal golden exactly; golden itself
is checked against an independent loop implementation."""

from __future__ import annotations

import numpy as np
import pytest

from shiftbook import numerics as nx
from shiftbook.config import load_config
from shiftbook.isa import Mode, Opcode, Reg
from shiftbook.sim.compare import compare_tensors
from shiftbook.sim.functional import run_program
from shiftbook.sw.compiler import compile_graph, unpack_tensor
from shiftbook.sw.compiler.conv import CompileError
from shiftbook.sw.ir import Conv2d, Graph, IRError, MaxPool2d, SumPool2d, TensorSpec
from shiftbook.sw.reference import random_pool, run_graph

# name -> (kind, C, H, W, kernel, stride, padding, shift)
POOLS = {
    "max3x3-s2-p1": ("max", 5, 9, 9, (3, 3), (2, 2), (1, 1, 1, 1), 0),
    "max2x2-s2": ("max", 3, 8, 6, (2, 2), (2, 2), (0, 0, 0, 0), 0),
    "max3x3-s2-p1-odd": ("max", 9, 7, 10, (3, 3), (2, 2), (1, 1, 1, 1), 0),
    "gsum8x8-s6": ("sum", 10, 8, 8, (8, 8), (1, 1), (0, 0, 0, 0), 6),
    "gsum7x7-s5": ("sum", 4, 7, 7, (7, 7), (1, 1), (0, 0, 0, 0), 5),
    "sum2x2-s2-s0": ("sum", 3, 6, 6, (2, 2), (2, 2), (0, 0, 0, 0), 0),
}


def pool_graph(kind: str, c: int, h: int, w: int, kernel: tuple[int, int],
               stride: tuple[int, int], padding: tuple[int, int, int, int], shift: int,
               seed: int = 0) -> tuple[Graph, dict[str, np.ndarray]]:
    layer = random_pool(kind, c, h, w, kernel, stride, padding, shift, seed=seed)
    return layer.graph, layer.inputs


def loop_pool(kind: str, x: np.ndarray, kernel, stride, padding, shift: int) -> np.ndarray:
    """Independent golden: explicit loops over valid window positions, round-half-up shift,
    int8 saturation."""
    c, h, w = x.shape
    (kh, kw), (sy, sx), (t, left, b, r) = kernel, stride, padding
    oh, ow = (h + t + b - kh) // sy + 1, (w + left + r - kw) // sx + 1
    out = np.zeros((c, oh, ow), np.int64)
    for ch in range(c):
        for oy in range(oh):
            for ox in range(ow):
                vals = [int(x[ch, iy, ix]) for ky in range(kh) for kx in range(kw)
                        for iy, ix in [(oy * sy - t + ky, ox * sx - left + kx)]
                        if 0 <= iy < h and 0 <= ix < w]
                if kind == "max":
                    v = max(vals)
                else:
                    s = sum(vals)
                    v = (s + (1 << (shift - 1))) >> shift if shift else s
                out[ch, oy, ox] = min(127, max(-128, v))
    return out


def run_functional(graph: Graph, inputs: dict[str, np.ndarray], config: str):
    cfg = load_config(config)
    golden = run_graph(graph, inputs)
    prog = compile_graph(graph, cfg, inputs)
    res = run_program(cfg, prog.memory)
    got = {n: unpack_tensor(res.memory, p) for n, p in prog.tensors.items()}
    return prog, golden, got, compare_tensors(prog.layers, golden, got)


@pytest.mark.parametrize("case", list(POOLS))
def test_golden_pool_matches_loops(case):
    kind, c, h, w, k, s, p, sh = POOLS[case]
    g, inp = pool_graph(kind, c, h, w, k, s, p, sh)
    y = run_graph(g, inp)["y"]
    np.testing.assert_array_equal(y, loop_pool(kind, inp["x"], k, s, p, sh))


@pytest.mark.parametrize("config", ["tiny", "small"])
@pytest.mark.parametrize("case", list(POOLS))
def test_pool_functional_equals_golden(config, case):
    kind, c, h, w, k, s, p, sh = POOLS[case]
    g, inp = pool_graph(kind, c, h, w, k, s, p, sh, seed=3)
    prog, golden, got, cmp = run_functional(g, inp, config)
    assert cmp.bit_exact, str(cmp)
    np.testing.assert_array_equal(got["y"], golden["y"])
    lay = prog.layers[0]
    assert lay.op == ("maxpool2d" if kind == "max" else "sumpool2d")
    assert lay.weight_bytes == 0 and lay.ideal_cycles > 0


def test_pool_program_shape():
    """The instructions follow the brief: MODE MAX, NCH=1, one column per COMPUTE at bank
    c mod cols, no WGT loads, every COMPUTE clears and drains."""
    cfg = load_config("small")
    kind, c, h, w, k, s, p, sh = POOLS["max3x3-s2-p1-odd"]
    g, inp = pool_graph(kind, c, h, w, k, s, p, sh)
    prog = compile_graph(g, cfg, inp)
    regs: dict[int, int] = {}
    cols_seen = set()
    n = 0
    for insn in prog.insns:
        if insn.op == Opcode.SET:
            regs[insn.reg] = insn.value
        elif insn.op == Opcode.LOAD:
            assert insn.buf != 1, "pooling loads no weights"
        elif insn.op == Opcode.COMPUTE:
            n += 1
            assert regs[Reg.MODE] == Mode.MAX and regs[Reg.NCH] == 1
            assert (regs[Reg.KH], regs[Reg.KW]) == (3, 3)
            assert insn.ncols == 1 and insn.clear == 1 and insn.drain == 1
            cols_seen.add(insn.col0)
    oh, ow = prog.tensors["y"].shape[1:]
    assert n == c * -(-(oh * ow) // cfg.rows)
    assert cols_seen == set(range(cfg.cols))


def test_pool_bands_and_channel_ranges():
    """Layers that do not fit the buffers at once: several output bands; several ACT
    channel ranges per group (one channel's band rows fill half of ACT); bit-exact."""
    g, inp = pool_graph("max", 5, 40, 200, (3, 3), (2, 2), (1, 1, 1, 1), 0, seed=9)
    prog, golden, got, cmp = run_functional(g, inp, "tiny")
    assert cmp.bit_exact, str(cmp)
    assert len(prog.layers[0].tiles.bands) > 2
    g, inp = pool_graph("sum", 3, 5, 800, (3, 2), (1, 2), (0, 0, 0, 0), 3, seed=9)
    prog, golden, got, cmp = run_functional(g, inp, "tiny")
    assert cmp.bit_exact, str(cmp)
    assert len(prog.layers[0].tiles.chunks) == 2


def test_sum_pool_saturates_and_rounds():
    """All-127 input: the 8x8 sum 8128 >> 6 rounds to 127; all -128 gives -128."""
    for v in (127, -128):
        g, _ = pool_graph("sum", 2, 8, 8, (8, 8), (1, 1), (0, 0, 0, 0), 6)
        inp = {"x": np.full((2, 8, 8), v, np.int64)}
        _, golden, got, cmp = run_functional(g, inp, "tiny")
        assert cmp.bit_exact
        assert (got["y"] == v).all()
    g, _ = pool_graph("sum", 1, 2, 2, (2, 2), (1, 1), (0, 0, 0, 0), 1)
    inp = {"x": np.array([[[1, 0], [0, 0]]])}  # 1 >> 1 rounds half up to 1
    assert run_functional(g, inp, "tiny")[2]["y"].item() == 1


def test_pool_ir_round_trip(tmp_path):
    g, inp = pool_graph("sum", 3, 7, 7, (7, 7), (1, 1), (0, 0, 0, 0), 4)
    g.save(tmp_path)
    g2 = Graph.load(tmp_path)
    assert isinstance(g2.ops[0], SumPool2d) and g2.ops[0].shift == 4
    np.testing.assert_array_equal(run_graph(g2, inp)["y"], run_graph(g, inp)["y"])


def test_pool_ir_refuses_bad_frac():
    g = Graph(inputs=["x"], outputs=["y"])
    g.add_tensor(TensorSpec("x", (2, 4, 4), 5))
    g.add_tensor(TensorSpec("y", (2, 2, 2), 4))
    with pytest.raises(IRError, match="keeps the scale"):
        g.add_op(MaxPool2d("p", "x", "y", kernel=(2, 2), stride=(2, 2)))


def test_pool_compile_refuses_oversized_sum():
    cfg = load_config("tiny")
    g, inp = pool_graph("sum", 1, 8, 8, (8, 8), (1, 1), (0, 0, 0, 0), 40)
    with pytest.raises(CompileError, match="shift"):
        compile_graph(g, cfg, inp)


def test_conv_pool_chain_functional():
    """conv -> maxpool -> conv -> global sum pool -> linear-as-conv: bit-exact on small."""
    rng = np.random.default_rng(4)
    cfg = load_config("small")
    g = Graph(inputs=["x"], outputs=["z"])
    g.add_tensor(TensorSpec("x", (3, 10, 10), 5))
    g.add_tensor(TensorSpec("a", (9, 10, 10), 4))
    g.add_tensor(TensorSpec("b", (9, 5, 5), 4))
    g.add_tensor(TensorSpec("c", (9, 5, 5), 4))
    g.add_tensor(TensorSpec("d", (9, 1, 1), 0))
    g.add_tensor(TensorSpec("z", (6, 1, 1), 2))

    def codes(shape):  # +-2**e, e in 0..3
        return nx.encode_shift(np.zeros(shape), rng.integers(0, 2, shape),
                               rng.integers(0, 4, shape), cfg.exp_bits)

    w1, w2, w3 = codes((9, 3, 3, 3)), codes((9, 9, 3, 3)), codes((6, 9, 1, 1))
    g.add_op(Conv2d("c1", "x", "a", weight=w1, exp_bits=cfg.exp_bits, shift=np.full(9, 4),
                    relu=True, padding=(1, 1, 1, 1)))
    g.add_op(MaxPool2d("mp", "a", "b", kernel=(3, 3), stride=(2, 2), padding=(1, 1, 1, 1)))
    g.add_op(Conv2d("c2", "b", "c", weight=w2, exp_bits=cfg.exp_bits, shift=np.full(9, 5),
                    relu=True, padding=(1, 1, 1, 1), residual="b", res_shift=np.full(9, 2)))
    g.add_op(SumPool2d("gap", "c", "d", kernel=(5, 5), stride=(1, 1), shift=4))
    g.add_op(Conv2d("fc", "d", "z", weight=w3, exp_bits=cfg.exp_bits, shift=np.full(6, 2)))
    g.validate()
    inp = {"x": rng.integers(-128, 128, (3, 10, 10))}
    _, golden, got, cmp = run_functional(g, inp, "small")
    assert cmp.bit_exact, str(cmp)
    assert np.abs(golden["d"]).max() > 10  # the chain carries signal to the end
