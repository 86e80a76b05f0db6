"""The RTL harness (sim/rtl: extmem.v, sim_top.v, cocotb_core.py, runner.py) on a stand-in
core, independent of the real accelerator: memory images in and out, MARK log, cycle counts,
back-pressure, timeouts, core errors, memory faults and the build cache."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

import pytest

from shiftbook.config import PRESETS, CoreConfig
from shiftbook.isa import Buf, Insn, Opcode, encode_program
from shiftbook.sim.rtl import runner
from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "rtl"))
from standin import random_program, run_model, standin_core  # noqa: E402

pytestmark = pytest.mark.rtl

TINY = PRESETS["tiny"]  # 8-byte bus, latency 4: two bus words per instruction
NARROW = CoreConfig(rows=2, cols=2, bus_bytes=4, mem_latency=1, mem_words=1 << 16,
                    abuf_bytes=1024, wbuf_rows=64, bbuf_rows=16, obuf_bytes=1024,
                    max_k=16, max_d=4, name="narrow")  # 4 words per instruction, latency 1
CONFIGS = [TINY, NARROW]


@pytest.fixture(scope="session")
def standin():
    try:
        setup_verilator_env()
    except ToolchainError as e:
        pytest.skip(str(e))
    core = standin_core()
    for cfg in CONFIGS:
        runner.build(cfg, core=core)  # once per session (and cached on disk across them)
    return core


def _check(cfg, image, res, model):
    assert res.status == "done"
    assert res.memory == model.memory
    assert [m[0] for m in res.marks] == model.marks
    assert res.mem_reads == model.reads
    assert res.mem_writes == model.writes


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
def test_handwritten_program(standin, cfg):
    b = cfg.bus_bytes
    prog = encode_program([
        Insn(Opcode.MARK, {"id": 7}),
        Insn(Opcode.LOAD, {"buf": Buf.ACT, "ext_addr": 64, "buf_addr": 0, "words": 4,
                           "runs": 2, "ext_stride": 8, "buf_stride": 4}),
        Insn(Opcode.STORE, {"buf": Buf.OUT, "ext_addr": 128, "buf_addr": 0, "words": 8,
                            "runs": 1, "ext_stride": 0, "buf_stride": 0}),
        Insn(Opcode.MARK, {"id": 65535}),
        Insn(Opcode.END),
    ])
    image = bytearray(prog.ljust(64 * b, b"\0"))
    image += bytes(range(256))[: 16 * b]  # words 64..79
    res = runner.run_image(cfg, bytes(image), core=standin, timeout_cycles=10_000)
    assert res.status == "done"
    # words 64..67 and 72..75 copied to 128..135: memory grows past the image to word 136
    assert len(res.memory) == 136 * b
    expect = bytes(image[64 * b:68 * b]) + bytes(image[72 * b:76 * b])
    assert res.memory[128 * b:136 * b] == expect
    assert res.memory[:len(image)] == bytes(image)
    assert [m[0] for m in res.marks] == [7, 65535]
    assert res.marks[0][1] < res.marks[1][1] < res.cycles
    assert res.mem_reads == 5 * (16 // b) + 8 and res.mem_writes == 8
    # latency shows in the cycle count: 5 fetches + 1 load, each waits for its responses
    assert res.cycles >= 6 * cfg.mem_latency


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("seed", [1, 2])
def test_random_programs_match_model(standin, cfg, seed):
    rng = random.Random(seed * 1000 + cfg.bus_bytes)
    image, _ = random_program(cfg, rng, n=16)
    model = run_model(cfg, image)
    res = runner.run_image(cfg, image, core=standin, timeout_cycles=50_000)
    _check(cfg, image, res, model)
    # with back-pressure the result is identical and the run takes longer
    stalled = runner.run_image(cfg, image, core=standin, stall_seed=seed, stall_pct=40,
                               timeout_cycles=50_000)
    _check(cfg, image, stalled, model)
    assert stalled.cycles > res.cycles
    assert [m[0] for m in stalled.marks] == [m[0] for m in res.marks]


def test_cycle_count_is_deterministic(standin):
    image, _ = random_program(TINY, random.Random(9), n=10)
    a = runner.run_image(TINY, image, core=standin)
    c = runner.run_image(TINY, image, core=standin, stall_seed=77)
    assert c.cycles > a.cycles
    d = runner.run_image(TINY, image, core=standin, stall_seed=77)
    assert (c.cycles, c.marks) == (d.cycles, d.marks)


def test_timeout_reports_cycles_and_last_mark(standin):
    # no END: the stand-in fetches NOPs (zero words) until the cycle limit
    image = encode_program([Insn(Opcode.MARK, {"id": 41}), Insn(Opcode.MARK, {"id": 42})])
    with pytest.raises(runner.RtlTimeoutError, match=r"within 3000 cycles.*MARK 42") as ei:
        runner.run_image(TINY, image, core=standin, timeout_cycles=3000)
    res = ei.value.result
    assert res.status == "timeout" and 2990 <= res.cycles <= 3010
    assert [m[0] for m in res.marks] == [41, 42]


def test_core_error_is_reported(standin):
    image = encode_program([Insn(Opcode.MARK, {"id": 5})]) + (9).to_bytes(16, "little")
    with pytest.raises(runner.RtlRunError, match=r"core raised error.*MARK 5"):
        runner.run_image(TINY, image, core=standin, timeout_cycles=3000)


def test_memory_fault_is_reported(standin):
    words = runner.sim_words(NARROW)
    image = encode_program([
        Insn(Opcode.LOAD, {"buf": Buf.ACT, "ext_addr": words + 3, "buf_addr": 0, "words": 1,
                           "runs": 1, "ext_stride": 0, "buf_stride": 0}),
        Insn(Opcode.END),
    ])
    with pytest.raises(runner.RtlRunError, match=f"word {words + 3:#x} beyond"):
        runner.run_image(NARROW, image, core=standin, timeout_cycles=3000)


def test_image_too_large_is_refused(standin):
    big = bytes(runner.sim_words(NARROW) * NARROW.bus_bytes + 1)
    with pytest.raises(runner.RtlError, match="exceeds the simulated external memory"):
        runner.run_image(NARROW, big, core=standin)


def test_run_bundle_reads_only_bundles(standin, tmp_path):
    """run_bundle reads bundles through the one bundle reader (sw.bundle.load_bundle): a
    hand-made manifest is refused with that reader's message; raw images go to run_image."""
    from shiftbook.sw.bundle import BundleError

    image, _ = random_program(TINY, random.Random(5), n=8)
    (tmp_path / "memory.bin").write_bytes(image)
    (tmp_path / "manifest.json").write_text(json.dumps({
        "config": TINY.to_dict(), "config_hash": TINY.hash,
        "memory": {"file": "memory.bin"}}))
    with pytest.raises(BundleError, match="is not a shiftbook-bundle manifest"):
        runner.run_bundle(tmp_path, core=standin, timeout_cycles=50_000)
    with pytest.raises(BundleError, match="does not exist"):
        runner.run_bundle(tmp_path / "nowhere", core=standin)
    res = runner.run_image(TINY, image, core=standin, timeout_cycles=50_000)
    assert res.memory == run_model(TINY, image).memory


def test_build_is_cached(standin):
    t = runner.build(TINY, core=standin)
    assert t == runner.build(TINY, core=standin)
    assert (t / "build.json").exists() and (t / runner.TOPLEVEL).exists()
    assert runner.build(NARROW, core=standin) != t


def test_keep_run_dir(standin, tmp_path):
    image = encode_program([Insn(Opcode.MARK, {"id": 3}), Insn(Opcode.END)])
    res = runner.run_image(TINY, image, core=standin, run_dir=tmp_path / "run")
    assert res.run_dir == tmp_path / "run"
    assert (res.run_dir / "marks.txt").read_text().split()[0] == "3"
    assert res.memory == image


def test_hex_roundtrip(tmp_path):
    data = random.Random(0).randbytes(8 * 37 + 3)
    words = runner._write_hex(tmp_path / "a.hex", data, 8)
    assert words == 38
    back = runner._read_hex(tmp_path / "a.hex", 8)
    assert back == data + bytes(5)
    (tmp_path / "b.hex").write_text("// comment\n@2\n0102030405060708\n")
    assert runner._read_hex(tmp_path / "b.hex", 8) == bytes(16) + bytes(range(8, 0, -1))


def test_waves_fst(standin):
    image = encode_program([Insn(Opcode.MARK, {"id": 3}), Insn(Opcode.END)])
    res = runner.run_image(TINY, image, core=standin, waves=True)
    try:
        assert res.waves is not None and res.waves.suffix == ".fst"
        assert res.waves.stat().st_size > 200
        assert res.marks == [(3, res.marks[0][1])]
    finally:
        import shutil
        shutil.rmtree(res.run_dir, ignore_errors=True)


def test_missing_compiler_is_a_toolchain_error(monkeypatch, tmp_path):
    import shutil

    from shiftbook.sim.rtl import toolchain

    monkeypatch.setenv("SHIFTBOOK_BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(toolchain.ToolchainError, match="make and g\\+\\+"):
        runner.run_image(TINY, b"", core=standin_core())
