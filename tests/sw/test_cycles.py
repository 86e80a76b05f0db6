"""The cycle model (shiftbook/timing.py) against the RTL.

Two layers of checks: hand-assembled micro programs pinned to cycle counts measured on the
Verilator core (fast, no RTL needed), and compiled layers and multi-layer programs run in RTL
(cached Verilator builds of the tiny and small presets) where every MARK segment must be
within 2% (the issue's bound; the model is cycle-exact on all of them today).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from shiftbook.config import PRESETS, CoreConfig
from shiftbook.isa import Buf, Insn, Opcode, Reg
from shiftbook.timing import compare_marks, estimate, estimate_program

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import bench_cycle_model as corpus  # noqa: E402

SMALL = PRESETS["small"]
BOUND_PCT = 2.0


def _i(op: Opcode, **a: int) -> Insn:
    return Insn(op, a)


def _load(buf: Buf, words: int, runs: int = 1) -> Insn:
    return _i(Opcode.LOAD, buf=buf, ext_addr=4096, buf_addr=0, words=words, runs=runs,
              ext_stride=words, buf_stride=words)


def _store(words: int, runs: int = 1) -> Insn:
    return _i(Opcode.STORE, buf=Buf.OUT, ext_addr=4096, buf_addr=0, words=words, runs=runs,
              ext_stride=words, buf_stride=words)


def _tile_regs(k: int, nch: int) -> list[Insn]:
    return [_i(Opcode.SET, reg=Reg.IN_H, value=4), _i(Opcode.SET, reg=Reg.IN_W, value=4),
            _i(Opcode.SET, reg=Reg.OUT_W, value=4), _i(Opcode.SET, reg=Reg.KH, value=k),
            _i(Opcode.SET, reg=Reg.KW, value=k), _i(Opcode.SET, reg=Reg.NCH, value=nch)]


def _tile(cfg: CoreConfig) -> Insn:
    return _i(Opcode.COMPUTE, clear=1, drain=1, npix=cfg.rows, ncols=cfg.cols)


TAIL = [_i(Opcode.MARK, id=0), _i(Opcode.END)]

# (program, RTL cycles to done, RTL MARK cycle) measured with sim/rtl on the small preset
# (4x8 PEs, bus 8 bytes, latency 8): fetch start-up, DMA streaming with fetch stealing
# port cycles, store pipeline, compute walk/drain overlap, SYNC and END.
MICRO = {
    "end": ([_i(Opcode.END)], 14, None),
    "mark_end": (TAIL, 16, 13),
    "sets": ([_i(Opcode.SET, reg=Reg.KH, value=1)] * 10 + TAIL, 36, 33),
    "load1": ([_load(Buf.WGT, 1), _i(Opcode.SYNC, mask=1)] + TAIL, 33, 30),
    "load64": ([_load(Buf.WGT, 64), _i(Opcode.SYNC, mask=1)] + TAIL, 96, 93),
    "load8x8": ([_load(Buf.ACT, 8, 8), _i(Opcode.SYNC, mask=1)] + TAIL, 96, 93),
    "2load32": ([_load(Buf.WGT, 32), _load(Buf.WGT, 32), _i(Opcode.SYNC, mask=1)] + TAIL,
                99, 96),
    "store64": ([_store(64), _i(Opcode.SYNC, mask=1)] + TAIL, 88, 85),
    "store1_load8": ([_store(1), _load(Buf.WGT, 8), _i(Opcode.SYNC, mask=1)] + TAIL, 43, 40),
    "load8_store4": ([_load(Buf.WGT, 8), _store(4), _i(Opcode.SYNC, mask=1)] + TAIL, 40, 37),
    "store1_store1_load1": ([_store(1), _store(1), _load(Buf.WGT, 1),
                             _i(Opcode.SYNC, mask=1)] + TAIL, 39, 36),
    "store2x3_load2x2_store1": ([_store(2, 3), _load(Buf.WGT, 2, 2), _store(1),
                                 _i(Opcode.SYNC, mask=1)] + TAIL, 44, 41),
    # the single write of a 1-word store waits for the port while fetch streams SETs
    "store1_sets_load8": ([_store(1)] + [_i(Opcode.SET, reg=Reg.KH, value=1)] * 12
                          + [_load(Buf.WGT, 8), _i(Opcode.SYNC, mask=1)] + TAIL, 67, 64),
    "tile": (_tile_regs(3, 4) + [_tile(SMALL), _i(Opcode.SYNC, mask=2)] + TAIL, 81, 78),
    "4tiles": (_tile_regs(3, 4) + [_tile(SMALL)] * 4 + [_i(Opcode.SYNC, mask=2)] + TAIL,
               189, 186),
    "6short_tiles": (_tile_regs(1, 2) + [_tile(SMALL)] * 6 + [_i(Opcode.SYNC, mask=2)] + TAIL,
                     67, 64),
    "load_then_tiles": ([_load(Buf.WGT, 40)] + _tile_regs(3, 1) + [_tile(SMALL)] * 6
                        + [_i(Opcode.SYNC, mask=3)] + TAIL, 101, 98),
}


@pytest.mark.parametrize("name", list(MICRO))
def test_micro_programs_match_measured_rtl(name: str) -> None:
    prog, cycles, mark = MICRO[name]
    est = estimate_program(SMALL, prog)
    assert est.total == cycles
    assert [c for _, c in est.marks] == ([] if mark is None else [mark])


def test_model_is_monotone_in_work() -> None:
    """More DMA words and more reduction steps never make the model faster."""
    a = estimate_program(SMALL, [_load(Buf.WGT, 64), _i(Opcode.SYNC, mask=1)] + TAIL).total
    b = estimate_program(SMALL, [_load(Buf.WGT, 65), _i(Opcode.SYNC, mask=1)] + TAIL).total
    assert b == a + 1     # one more word streams in one more cycle
    t4 = estimate_program(SMALL, _tile_regs(3, 4) + [_tile(SMALL)] * 4
                          + [_i(Opcode.SYNC, mask=2)] + TAIL).total
    t5 = estimate_program(SMALL, _tile_regs(3, 4) + [_tile(SMALL)] * 5
                          + [_i(Opcode.SYNC, mask=2)] + TAIL).total
    assert t5 - t4 == 36  # back-to-back tiles: K = 4*3*3 cycles each


def test_compare_marks_reports_error() -> None:
    est = estimate_program(SMALL, MICRO["load64"][0])
    cmp = compare_marks(est, 100, [(0, 90)])
    seg, tot = cmp["segments"]
    assert seg["model"] == 93 and seg["rtl"] == 90
    assert seg["error_pct"] == pytest.approx(100 * 3 / 90)
    assert tot["error_pct"] == pytest.approx(-4.0)
    assert cmp["max_abs_error_pct"] == pytest.approx(4.0)
    with pytest.raises(ValueError, match="MARKs"):
        compare_marks(est, 100, [(1, 90)])


def test_estimate_is_fast() -> None:
    """Pure Python over instructions: a 20k-instruction program in well under a second."""
    prog = _tile_regs(3, 4) + [_tile(SMALL), _load(Buf.ACT, 8, 4)] * 10000
    prog += [_i(Opcode.SYNC, mask=3)] + TAIL
    t0 = time.perf_counter()
    est = estimate_program(SMALL, prog)
    assert time.perf_counter() - t0 < 2.0
    assert est.total > 10000 * 36


# ---------------------------------------------------------------- against RTL
RTL_CASES = ["small_3x3_16_32_s14", "small_1x1_s2_16_32_s16", "small_residual_16_16_s8",
             "small_chain3", "tiny_3x3_130_4_s4_chunks", "tiny_3x3_8_6_s24_bands",
             "tiny_chain3"]
# other Verilator builds (a 1 KiB ACT buffer for multi-band layers, bus widths 4 and 16)
# and the 9 conv layers of ResNet-8 (~400k cycles, ~40 s of RTL)
SLOW_RTL_CASES = ["tinyA1k_3x3_8_6_s16_bands", "tinyA1k_chain2_bands", "b4_chain2",
                  "b16_chain2", "resnet8_convs_small"]


@pytest.fixture(scope="module")
def rtl_ok() -> None:
    try:
        from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env
    except ImportError as e:
        pytest.skip(str(e))
    try:
        setup_verilator_env()
    except ToolchainError as e:
        pytest.skip(str(e))


@pytest.mark.rtl
@pytest.mark.parametrize("name", RTL_CASES + [
    pytest.param(n, marks=pytest.mark.slow) for n in SLOW_RTL_CASES])
def test_model_within_bound_of_rtl(name: str, rtl_ok: None) -> None:
    from shiftbook.sw.bundle import load_bundle

    case = {c.name: c for c in corpus.CORPUS}[name]
    bdir = corpus._bundle(case)                 # build/cycle_model/<name>/bundle
    rtl = corpus.rtl_measure(bdir)              # cached per memory image
    assert rtl is not None
    bundle = load_bundle(bdir)
    est = estimate(bundle)
    cmp = compare_marks(est, rtl["cycles"], [tuple(m) for m in rtl["marks"]])
    assert len(cmp["segments"]) == len(bundle.layers) + 1
    for seg in cmp["segments"]:
        assert abs(seg["error_pct"]) <= BOUND_PCT, seg


# ---------------------------------------------------------------- CLI
def test_cli_estimate_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from shiftbook.cli import main
    from shiftbook.sw.bundle import write_bundle
    from shiftbook.sw.compiler import compile_graph

    case = {c.name: c for c in corpus.CORPUS}["tiny_chain3"]
    graph, inputs = corpus.chain_graph(case, PRESETS["tiny"].exp_bits,
                                       PRESETS["tiny"].acc_bits)
    prog = compile_graph(graph, PRESETS["tiny"], inputs)
    write_bundle(prog, graph, tmp_path / "b")
    capsys.readouterr()
    assert main(["estimate", str(tmp_path / "b"), "--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert [lay["name"] for lay in rec["layers"]] == ["conv0", "conv1", "conv2"]
    assert all(lay["model"] > 0 for lay in rec["layers"])
    assert rec["total"]["model"] >= sum(lay["model"] for lay in rec["layers"])
    assert main(["estimate", str(tmp_path / "b")]) == 0
    assert "conv2" in capsys.readouterr().out


def test_cli_estimate_missing_bundle(tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    from shiftbook.cli import main

    assert main(["estimate", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and len(err.strip().splitlines()) == 1


def _set(reg: Reg, value: int) -> Insn:
    return _i(Opcode.SET, reg=reg, value=value)


def _cb_regs(d: int, k: int = 16) -> list[Insn]:
    return [_set(Reg.CB_D, d), _set(Reg.CB_K, k), _set(Reg.WFMT, 1), _set(Reg.IDX_BITS, 4)]


SYNC_ALL = _i(Opcode.SYNC, mask=3)

# Codebook programs on the small preset, measured on the Verilator core (index rows all 0):
# LOAD CB's codebook writer (one cycle per codeword a bus word touches, reads throttled to
# mem_latency + 2 words ahead of it) and codebook tiles (index fetcher + decoder: start-up
# latency, 2-cycle flush of a cut-short last block, CB_D change, raw tiles' WGT reads first).
MICRO_CB = {
    "cb_d4_8w": ([_set(Reg.CB_D, 4), _set(Reg.CB_K, 16), _load(Buf.CB, 8), SYNC_ALL] + TAIL,
                 53),
    "cb_d9_18w": ([_set(Reg.CB_D, 9), _set(Reg.CB_K, 16), _load(Buf.CB, 18), SYNC_ALL]
                  + TAIL, 69),
    "cb_d18_144w": ([_set(Reg.CB_D, 18), _set(Reg.CB_K, 64), _load(Buf.CB, 144), SYNC_ALL]
                    + TAIL, 229),
    "cb_d0_9w": ([_set(Reg.CB_D, 0), _set(Reg.CB_K, 4), _load(Buf.CB, 9), SYNC_ALL] + TAIL,
                 49),
    "cb_d2_16w_load8": ([_set(Reg.CB_D, 2), _set(Reg.CB_K, 64), _load(Buf.CB, 16),
                         _load(Buf.WGT, 8), SYNC_ALL] + TAIL, 120),
    "w_d1_k1": (_cb_regs(1) + _tile_regs(1, 1) + [_tile(SMALL)] * 6 + [SYNC_ALL] + TAIL, 74),
    "w_d4_k3n3": (_cb_regs(4) + _tile_regs(3, 3) + [_tile(SMALL)] * 4 + [SYNC_ALL] + TAIL,
                  167),
    "w_d9_k3n2": (_cb_regs(9) + _tile_regs(3, 2) + [_tile(SMALL)] * 4 + [SYNC_ALL] + TAIL,
                  125),
    "w_mixd": (_cb_regs(4) + _tile_regs(3, 1) + [_tile(SMALL)] * 2 + [_set(Reg.CB_D, 9)]
               + [_tile(SMALL)] * 2 + [SYNC_ALL] + TAIL, 94),
    "w_raw_then_cb": (_tile_regs(3, 8) + [_tile(SMALL)] * 2 + _cb_regs(2)
                      + [_tile(SMALL)] * 2 + [SYNC_ALL] + TAIL, 337),
    "w_cb_then_raw": (_cb_regs(3) + _tile_regs(3, 2) + [_tile(SMALL)] * 2
                      + [_set(Reg.WFMT, 0)] + [_tile(SMALL)] * 2 + [SYNC_ALL] + TAIL, 125),
    "w_load_cb_tiles": ([_set(Reg.CB_D, 4), _set(Reg.CB_K, 16), _load(Buf.CB, 8)]
                        + _cb_regs(4) + _tile_regs(1, 4) + [_tile(SMALL)] * 3 + [SYNC_ALL]
                        + TAIL, 79),
    "w_d2_k1n2": (_cb_regs(2) + _tile_regs(1, 2) + [_tile(SMALL)] * 6 + [SYNC_ALL] + TAIL,
                  75),
}


@pytest.mark.parametrize("name", list(MICRO_CB))
def test_codebook_micro_programs_match_measured_rtl(name: str) -> None:
    prog, cycles = MICRO_CB[name]
    est = estimate_program(SMALL, prog)
    assert est.total == cycles
    assert est.approximate == []


# ---------------------------------------------------------------- memory stalls
def test_port_spreads_stalls_evenly() -> None:
    """25 % stalls: cycles 3, 7, 11, ... refuse requests; fetch takes only accepted cycles."""
    from fractions import Fraction

    from shiftbook.timing_units import MemoryPort

    port = MemoryPort(Fraction(1, 4))
    assert [t for t in range(12) if port.stalled(t)] == [3, 7, 11]
    assert port.next_ready(3) == 4 and port.next_ready(2) == 2
    assert port.nth_free(0, 5) == 5            # 0 1 2 4 5
    port.taken = [1, 4]
    assert port.nth_free(0, 5) == 8            # 0 2 5 6 8
    assert port.nth_free(3, 1) == 5
    assert MemoryPort().nth_free(0, 5) == 4


def test_stall_model_slows_memory_bound_programs() -> None:
    prog = [_load(Buf.WGT, 64), _i(Opcode.SYNC, mask=1)] + TAIL
    base = estimate_program(SMALL, prog)
    assert estimate_program(SMALL, prog, stall=0.0).total == base.total == 96
    half = estimate_program(SMALL, prog, stall=0.5)
    # 64 words and the program's fetch need about twice the cycles at 50 % stalls
    assert half.total > base.total + 60
    tiles = _tile_regs(3, 4) + [_tile(SMALL)] * 4 + [_i(Opcode.SYNC, mask=2)] + TAIL
    assert estimate_program(SMALL, tiles, stall=0.25).total - 189 < 20   # compute-bound
    with pytest.raises(ValueError, match="stall probability"):
        estimate_program(SMALL, prog, stall=1.0)


# The expected-stall model against the RTL memory's seeded random stalls (25 %, seed 1):
# measured max |error| 2.8 % on the small corpus and 3.5 % on tiny (a 40->3 linear layer of
# 343 cycles; bench_cycle_model.py --stall-pct 25), where the no-stall model is off by up to
# 22 %. Random stalls come in runs, evenly spread ones do not, so the model is a little low.
STALL_BOUND_PCT = 5.0


@pytest.mark.rtl
@pytest.mark.parametrize("name", ["small_1x1_s2_16_32_s16", "small_chain3"])
def test_stall_model_tracks_rtl_with_random_stalls(name: str, rtl_ok: None) -> None:
    from shiftbook.sw.bundle import load_bundle

    case = {c.name: c for c in corpus.CORPUS}[name]
    bdir = corpus._bundle(case)
    rtl = corpus.rtl_measure(bdir, stall_pct=25, stall_seed=1)
    assert rtl is not None
    bundle = load_bundle(bdir)
    marks = [tuple(m) for m in rtl["marks"]]
    cmp = compare_marks(estimate(bundle, stall=0.25), rtl["cycles"], marks)
    for seg in cmp["segments"]:
        assert abs(seg["error_pct"]) <= STALL_BOUND_PCT, seg
    no_stall = compare_marks(estimate(bundle), rtl["cycles"], marks)
    assert no_stall["segments"][-1]["error_pct"] < -STALL_BOUND_PCT    # it underestimates


@pytest.mark.rtl
@pytest.mark.parametrize("stall_pct", [0, 25])
def test_cli_estimate_validate(tmp_path: Path, rtl_ok: None, stall_pct: int,
                               capsys: pytest.CaptureFixture[str]) -> None:
    from shiftbook.cli import main
    from shiftbook.sw.bundle import write_bundle
    from shiftbook.sw.compiler import compile_graph

    tiny = PRESETS["tiny"]
    case = corpus.Case("cli", "tiny", cin=3, size=6, chain=((4, 3, 1), (3, 1, 2)))
    graph, inputs = corpus.chain_graph(case, tiny.exp_bits, tiny.acc_bits)
    write_bundle(compile_graph(graph, tiny, inputs), graph, tmp_path / "b")
    capsys.readouterr()
    args = ["estimate", str(tmp_path / "b"), "--validate"]
    if stall_pct:
        args += ["--stall-pct", str(stall_pct)]
    bound = STALL_BOUND_PCT if stall_pct else BOUND_PCT
    assert main(args + ["--json"]) == 0
    rec = json.loads(capsys.readouterr().out)
    assert [lay["name"] for lay in rec["layers"]] == ["conv0", "conv1"]
    assert rec["stall_pct"] == stall_pct
    if stall_pct:
        assert rec["stall_seed"] == 1
    for lay in rec["layers"]:
        assert lay["rtl"] > 0 and abs(lay["error_pct"]) <= bound
    assert rec["max_abs_error_pct"] <= bound
    assert main(args) == 0
    assert "max |error|" in capsys.readouterr().out
