"""Functional simulator (L1) == golden reference (L0), bit-exact, across layer shapes and
core configurations; plus the simulator's own checks (hazards, bounds) and ISA modes."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shiftbook import numerics as nx
from shiftbook.config import PRESETS, CoreConfig
from shiftbook.isa import Buf, Insn, Mode, Opcode, Reg, SyncMask, encode_program
from shiftbook.sim.compare import compare_tensors
from shiftbook.sim.functional import HazardError, SimError, run_program
from shiftbook.sw.compiler import compile_graph, unpack_tensor
from shiftbook.sw.reference import random_layer, run_graph
from shiftbook.timing import estimate_program

CONFIGS = {
    "tiny": PRESETS["tiny"],
    "small": PRESETS["small"],
    "base": PRESETS["base"],
    "mult": CoreConfig(rows=4, cols=4, pe="mult", name="mult"),
    # Buffers so small that layers need input bands, output bands and channel chunks.
    "tinybuf": CoreConfig(rows=2, cols=4, bus_bytes=4, abuf_bytes=256, wbuf_rows=32,
                          bbuf_rows=2, obuf_bytes=64, mem_latency=3, name="tinybuf"),
    "tinybuf3": CoreConfig(rows=3, cols=3, bus_bytes=8, abuf_bytes=128, wbuf_rows=16,
                           bbuf_rows=2, obuf_bytes=32, mem_latency=1, name="tinybuf3"),
}

# (op, cin, cout, kernel, stride, padding, size, weights, input)
CASES = {
    "1x1": ("conv", 8, 12, 1, 1, 0, 6, "normal", "normal"),
    "3x3": ("conv", 6, 9, 3, 1, None, 7, "normal", "normal"),
    "7x7s2": ("conv", 3, 5, 7, 2, 3, 12, "normal", "uniform"),
    "3x3s2p0": ("conv", 4, 4, 3, 2, 0, 9, "sparse", "normal"),
    "3to13": ("conv", 3, 13, 3, 1, 1, 8, "normal", "normal"),
    "27to5": ("conv", 27, 5, 3, 2, 1, 7, "normal", "uniform"),
    "linear": ("linear", 37, 11, 1, 1, 0, 1, "normal", "normal"),
    "zero_w": ("conv", 5, 6, 3, 1, 1, 5, "zero", "uniform"),
    "extreme": ("conv", 9, 7, 3, 1, 1, 6, "extreme", "extreme"),
    "zero_x": ("conv", 4, 3, 3, 1, 1, 5, "normal", "zero"),
}


def _run(case: str, cfg: CoreConfig, seed: int = 0):
    op, cin, cout, k, s, p, size, wd, xd = CASES[case]
    layer = random_layer(op, cin, cout, k, s, p, size, seed=seed, exp_bits=cfg.exp_bits,
                         acc_bits=cfg.acc_bits, max_exp=6 if cfg.pe == "mult" else None,
                         weights_dist=wd, input_dist=xd)
    golden = run_graph(layer.graph, layer.inputs)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    res = run_program(cfg, prog.memory)
    got = {n: unpack_tensor(res.memory, p) for n, p in prog.tensors.items()}
    return layer, golden, prog, res, got


@pytest.mark.parametrize("cfg_name", list(CONFIGS))
@pytest.mark.parametrize("case", list(CASES))
def test_functional_matches_golden(case, cfg_name):
    cfg = CONFIGS[cfg_name]
    layer, golden, prog, res, got = _run(case, cfg)
    cmp = compare_tensors(prog.layers, golden, got)
    assert cmp.bit_exact, str(cmp)
    assert np.array_equal(got["x"], layer.inputs["x"])  # the input is left alone
    assert res.marks and res.marks[-1][0] == 0
    assert res.cycles >= prog.ideal_cycles


def test_extreme_case_really_saturates():
    _, golden, *_ = _run("extreme", CONFIGS["small"])
    assert np.mean(np.abs(golden["y"]) >= 127) > 0.5


def test_tiny_buffers_force_bands_and_chunks():
    _, golden, prog, _, got = _run("27to5", CONFIGS["tinybuf"])
    tiles = prog.layers[0].tiles
    assert len(tiles.bands) > 1 and len(tiles.chunks) > 1
    assert np.array_equal(got["y"], golden["y"])
    _, golden, prog, _, got = _run("7x7s2", CONFIGS["tinybuf"])
    assert len(prog.layers[0].tiles.bands) > 1
    assert np.array_equal(got["y"], golden["y"])


@pytest.mark.parametrize("seed", range(6))
def test_random_shapes_on_random_configs(seed):
    rng = np.random.default_rng(100 + seed)
    cfg = CONFIGS[str(rng.choice(["tiny", "small", "mult", "tinybuf"]))]
    k = int(rng.choice([1, 3, 5]))
    layer = random_layer("conv", int(rng.integers(1, 20)), int(rng.integers(1, 20)), k,
                         int(rng.integers(1, 3)), int(rng.integers(0, k)),
                         int(rng.integers(k, 12)), seed=seed, exp_bits=cfg.exp_bits,
                         max_exp=6 if cfg.pe == "mult" else None)
    golden = run_graph(layer.graph, layer.inputs)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    res = run_program(cfg, prog.memory)
    assert np.array_equal(unpack_tensor(res.memory, prog.tensors["y"]), golden["y"])


def test_cycles_are_the_exact_models():
    """The functional simulator reports the cycle model's total and MARK stamps."""
    _, _, prog, res, _ = _run("3x3", CONFIGS["small"])
    est = estimate_program(CONFIGS["small"], prog.insns)
    assert (res.cycles, res.marks) == (est.total, est.marks)
    assert res.stats["cycles"] == est.total


def test_cycle_limit_is_the_exact_models():
    """The watchdog passes at exactly the model's total and stops one cycle short at END."""
    cfg = CONFIGS["small"]
    _, _, prog, res, _ = _run("3x3", cfg)
    assert run_program(cfg, prog.memory, max_cycles=res.cycles).cycles == res.cycles
    end = len(prog.insns) - 1
    with pytest.raises(SimError, match=rf"limit of {res.cycles - 1} \(cycle {res.cycles} at "
                                       rf"instruction {end}\)"):
        run_program(cfg, prog.memory, max_cycles=res.cycles - 1)
    first_mark = res.marks[0][1]
    with pytest.raises(SimError, match="no END within the cycle limit"):
        run_program(cfg, prog.memory, max_cycles=first_mark // 2)


def test_missing_sync_is_a_hazard():
    cfg = CONFIGS["small"]
    layer = random_layer("conv", 4, 8, 3, seed=0)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    insns = [i for i in prog.insns if i.op != Opcode.SYNC]
    mem = bytearray(prog.memory)
    blob = encode_program(insns)
    mem[: len(prog.program)] = bytes(len(prog.program))
    mem[: len(blob)] = blob
    with pytest.raises(HazardError, match="missing SYNC"):
        run_program(cfg, bytes(mem))
    run_program(cfg, bytes(mem), check_hazards=False)  # without checks it runs to END


def _handmade(cfg: CoreConfig, insns: list[Insn], data: dict[int, bytes]) -> bytes:
    mem = bytearray(4096)
    blob = encode_program(insns)
    mem[: len(blob)] = blob
    for addr, d in data.items():
        mem[addr: addr + len(d)] = d
    return bytes(mem)


def _pool_program(cfg: CoreConfig, mode: Mode, relu: bool = False) -> list[Insn]:
    """4x4 one-channel input at byte 1024 (pitch 8), 2x2 window stride 2 -> 2x2 output at
    byte 2048, written to OUT bank 0 and stored."""
    B = cfg.bus_bytes
    sets = {Reg.IN_H: 4, Reg.IN_W: 4, Reg.A_PITCH: 8, Reg.A_PLANE: 32,
            Reg.A_WRAP: 2 * 8 - 1 * 2, Reg.OUT_W: 2, Reg.STRIDE_Y: 2, Reg.STRIDE_X: 2,
            Reg.PAD_L: 0, Reg.KH: 2, Reg.KW: 2, Reg.NCH: 1, Reg.O_WRAP: 8 - 1,
            Reg.MODE: int(mode), Reg.FLAGS: 1 if relu else 0, Reg.WFMT: 0}
    insns = [Insn(Opcode.SET, {"reg": int(r), "value": v}) for r, v in sets.items()]
    insns += [
        Insn(Opcode.LOAD, {"buf": int(Buf.ACT), "ext_addr": 1024 // B, "buf_addr": 0,
                           "words": 32 // B, "runs": 1, "ext_stride": 0, "buf_stride": 0}),
        Insn(Opcode.LOAD, {"buf": int(Buf.BIAS), "ext_addr": 1536 // B, "buf_addr": 0,
                           "words": cfg.bbuf_row_bytes // B, "runs": 1,
                           "ext_stride": 0, "buf_stride": 0}),
        Insn(Opcode.SYNC, {"mask": int(SyncMask.DMA)}),
        Insn(Opcode.COMPUTE, {"clear": 1, "drain": 1, "ox0": 0, "iy0": 0, "ix0": 0,
                              "npix": 4, "col0": 0, "ncols": 1, "act_base": 0, "o_off": 0,
                              "wgt_base": 0, "bias_row": 0}),
        Insn(Opcode.SYNC, {"mask": int(SyncMask.COMPUTE)}),
        Insn(Opcode.STORE, {"buf": int(Buf.OUT), "ext_addr": 2048 // B, "buf_addr": 0,
                            "words": 16 // B, "runs": 1, "ext_stride": 0, "buf_stride": 0}),
        Insn(Opcode.END, {}),
    ]
    return insns


@pytest.mark.parametrize("mode", [Mode.MAX, Mode.SUM])
def test_max_and_sum_modes(mode):
    cfg = CONFIGS["small"]
    rng = np.random.default_rng(int(mode))
    x = rng.integers(-128, 128, (4, 4))
    act = np.zeros((4, 8), np.int64)
    act[:, :4] = x
    bias = np.zeros(cfg.bbuf_row_bytes, np.uint8)
    bias[0:4] = np.array([3], "<i4").view(np.uint8)
    bias[4] = 1  # shift
    mem = _handmade(cfg, _pool_program(cfg, mode), {
        1024: act.astype(np.int8).tobytes(), 1536: bias.tobytes()})
    res = run_program(cfg, mem)
    out = np.frombuffer(res.memory[2048:2064], np.int8).reshape(2, 8)[:, :2].astype(np.int64)
    win = x.reshape(2, 2, 2, 2).transpose(0, 2, 1, 3).reshape(2, 2, 4)
    red = win.max(axis=2) if mode == Mode.MAX else win.sum(axis=2)
    assert np.array_equal(out, nx.requantize(red, 3, 1))


def test_bad_act_address_is_reported():
    cfg = CONFIGS["small"]
    insns = _pool_program(cfg, Mode.MAX)
    bad = dict(insns[-4].args, act_base=cfg.abuf_bytes - 2)
    insns[-4] = Insn(Opcode.COMPUTE, bad)
    with pytest.raises(SimError, match="ACT read at"):
        run_program(cfg, _handmade(cfg, insns, {}))


def test_unknown_instruction_is_reported():
    cfg = CONFIGS["small"]
    mem = bytearray(64)
    mem[0] = 0xF
    with pytest.raises(SimError, match="unknown opcode"):
        run_program(cfg, bytes(mem))


def test_mult_config_uses_int8_products():
    cfg = dataclasses.replace(CONFIGS["small"], pe="mult")
    layer, golden, prog, res, got = _run("3x3", cfg)
    assert np.array_equal(got["y"], golden["y"])


def test_two_layer_chain_every_tensor_matches():
    from shiftbook.sw.ir import Graph
    from shiftbook.sw.reference import quantize_conv

    cfg = CONFIGS["tinybuf"]
    a = random_layer("conv", 5, 6, 3, 1, None, 7, seed=9)
    g = Graph(inputs=["x"], outputs=["z"], tensors=dict(a.graph.tensors), ops=list(a.graph.ops))
    y = run_graph(a.graph, a.inputs)["y"]
    rng = np.random.default_rng(9)
    op2, z = quantize_conv("layer1", g.tensors["y"], "z", rng.normal(0, 0.2, (7, 6, 1, 1)),
                           None, exp_bits=cfg.exp_bits, calib=y, stride=(2, 2))
    g.add_tensor(z)
    g.add_op(op2)
    golden = run_graph(g, a.inputs)
    prog = compile_graph(g, cfg, a.inputs)
    res = run_program(cfg, prog.memory)
    got = {n: unpack_tensor(res.memory, p) for n, p in prog.tensors.items()}
    cmp = compare_tensors(prog.layers, golden, got)
    assert cmp.bit_exact and [m[0] for m in res.marks] == [0, 1]
    assert [lay.index for lay in prog.layers] == [0, 1]


def test_shift_products_equal_decoded_multiplication_for_every_code():
    """The simulator's matrix-product reduction relies on this identity (sw/numerics)."""
    for exp_bits in (1, 4, 5):
        codes = np.arange(1 << (exp_bits + 2))
        x = np.arange(-128, 128)[:, None]
        assert np.array_equal(nx.shift_product(x, codes[None], exp_bits),
                              x * nx.decode_shift(codes, exp_bits)[None])


@pytest.mark.parametrize("cfg_name", ["small", "tinybuf"])
def test_asymmetric_padding_and_stride(cfg_name):
    cfg = CONFIGS[cfg_name]
    layer = random_layer("conv", 5, 6, 3, 1, 0, 9, seed=4)
    op = layer.op
    op.padding, op.stride = (2, 0, 1, 2), (1, 2)
    oh, ow = op.out_hw((9, 9))
    layer.graph.tensors["y"] = type(layer.graph.tensors["y"])("y", (6, oh, ow), 0)
    layer.graph.validate()
    golden = run_graph(layer.graph, layer.inputs)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    res = run_program(cfg, prog.memory)
    assert np.array_equal(unpack_tensor(res.memory, prog.tensors["y"]), golden["y"])


@pytest.mark.parametrize("cfg_name", ["tiny", "small", "tinybuf", "tinybuf3"])
def test_residual_conv(cfg_name):
    cfg = CONFIGS[cfg_name]
    layer = random_layer("conv", 6, 6, 3, 1, None, 7, seed=5, input_dist="uniform")
    op = layer.op
    op.residual = "x"
    op.res_shift = np.array([12, 13, 14, 15, -1, 16])  # the layer shifts by 18
    layer.graph.validate()
    golden = run_graph(layer.graph, layer.inputs)
    no_res = run_graph(random_layer("conv", 6, 6, 3, 1, None, 7, seed=5,
                                    input_dist="uniform").graph, layer.inputs)
    assert not np.array_equal(golden["y"], no_res["y"])  # the residual matters
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    res = run_program(cfg, prog.memory)
    assert np.array_equal(unpack_tensor(res.memory, prog.tensors["y"]), golden["y"])
