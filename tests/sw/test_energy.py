"""Energy model on hand-computed event counts (Horowitz ISSCC 2014 default table)."""

from __future__ import annotations

import math

import pytest

from shiftbook.sw.estimate.energy import (
    EnergyError,
    format_comparison,
    layer_energy,
    load_table,
    network_energy,
)

LAYER = {
    "name": "conv1", "macs": 100, "shift_adds": 80, "accumulations": 10, "requants": 4,
    "codebook_reads": 20, "codebook_bytes": 8192, "codebook_width": 64,
    "buffers": {
        "ACT": {"bytes": 8192, "reads": 100, "writes": 50, "width": 64, "kind": "data"},
        "WGT": {"bytes": 32768, "reads": 10, "width": 64, "kind": "weight", "weight_bits": 4},
    },
    "ext_bytes": 16, "ext_weight_bytes": 8, "ext_weight_bits": 2,
}
# SRAM energy per 64 bits above 32 KB: 20 pJ * (size / 32 KB) ** (log 5 / log 32)
SLOPE = math.log(100 / 20) / math.log(32)


def test_default_table_values() -> None:
    t = load_table()
    assert t.int_add(8) == 0.03 and t.int_add(32) == 0.1 and t.int_mult(32) == 3.1
    assert t.fp_add(32) == 0.9 and t.fp_mult(32) == 3.7
    assert t.sram(8192, 64) == 10 and t.sram(1 << 20, 64) == 100
    assert t.dram_byte() == 1300 / 8
    assert t.int_add(24) == pytest.approx(0.075)          # log-log between 16 and 32 bits
    assert t.sram(2048, 64) == pytest.approx(5.0)          # sqrt law below 8 KB
    assert t.sram(32768, 8) == pytest.approx(2.5)          # width scales per bit


def test_shiftbook_layer_by_hand() -> None:
    e = layer_energy(LAYER, load_table(), design="shiftbook")
    assert e["arith"] == pytest.approx(80 * (0.03 + 0.1) + 10 * 0.1 + 4 * 2 * 0.1)
    assert e["codebook"] == pytest.approx(20 * 10)
    assert e["sram:ACT"] == pytest.approx(150 * 10)
    assert e["sram:WGT"] == pytest.approx(10 * 20)
    assert e["dram"] == pytest.approx(24 * 162.5)


def test_int8_and_fp32_layer_by_hand() -> None:
    t = load_table()
    i8 = layer_energy(LAYER, t, design="int8")
    assert i8["arith"] == pytest.approx(100 * 0.3 + 10 * 0.1 + 4 * (3.1 + 0.2))
    assert i8["codebook"] == 0
    assert i8["sram:ACT"] == pytest.approx(1500)
    # 4-bit weights become int8: a 64 KB buffer read 128 bits at a time
    assert i8["sram:WGT"] == pytest.approx(10 * 2 * 20 * 2 ** SLOPE)
    assert i8["dram"] == pytest.approx((16 + 8 * 4) * 162.5)     # 2-bit weights -> int8
    f32 = layer_energy(LAYER, t, design="fp32")
    assert f32["arith"] == pytest.approx(100 * 4.6 + 10 * 0.9 + 4 * 0.9)
    assert f32["sram:ACT"] == pytest.approx(150 * 4 * 20)      # 32 KB, 256-bit accesses
    assert f32["sram:WGT"] == pytest.approx(10 * 8 * 20 * 8 ** SLOPE)
    assert f32["dram"] == pytest.approx((16 * 4 + 8 * 16) * 162.5)


def test_network_totals_and_ratios() -> None:
    res = network_energy([LAYER, {**LAYER, "name": "conv2", "macs": 0, "shift_adds": 0}])
    one = sum(layer_energy(LAYER, load_table()).values())
    two = one - 80 * 0.13
    assert res.totals["shiftbook"] == pytest.approx(one + two)
    assert res.ratios()["shiftbook"] == 1.0
    assert res.ratios()["fp32"] > res.ratios()["int8"] > 1
    d = res.to_dict()
    assert [x["name"] for x in d["layers"]] == ["conv1", "conv2"]
    text = format_comparison(res)
    assert "shiftbook" in text and "int8" in text and "fp32" in text and "Horowitz" in text


def test_yaml_override(tmp_path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text("int_add: {32: 0.2}\ndram_64b: 640\n")
    t = load_table(p)
    assert t.int_add(32) == 0.2 and t.int_add(8) == 0.03      # other widths kept
    assert t.dram_byte() == 80
    assert "overrides" in t.source
    e = layer_energy(LAYER, t)
    assert e["arith"] == pytest.approx(80 * 0.23 + 10 * 0.2 + 4 * 2 * 0.2)


@pytest.mark.parametrize("override, match", [
    ({"int_ad": {8: 1}}, "unknown energy table key 'int_ad'"),
    ({"int_add": {8: -1}}, r"int_add\[8\] must be a non-negative"),
    ({"dram_64b": "lots"}, "dram_64b must be"),
])
def test_bad_tables(override, match) -> None:
    with pytest.raises(EnergyError, match=match):
        load_table(override)


def test_bad_events() -> None:
    t = load_table()
    with pytest.raises(EnergyError, match="unknown event 'mac'"):
        layer_energy({"name": "x", "mac": 3}, t)
    with pytest.raises(EnergyError, match="shift_adds must be a non-negative"):
        layer_energy({"shift_adds": -1}, t)
    with pytest.raises(EnergyError, match="kind must be"):
        layer_energy({"buffers": {"A": {"kind": "other"}}}, t)
    with pytest.raises(EnergyError, match="does not exist"):
        load_table("/nonexistent.yaml")


def test_events_from_compiled_layer() -> None:
    """Event counts of a compiled 2->3 channel 3x3 conv on a 4x4 input, by hand."""
    from shiftbook.config import CoreConfig
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.estimate.energy import events_from_bundle
    from shiftbook.sw.reference import random_layer

    cfg = CoreConfig(rows=2, cols=4, bus_bytes=4, abuf_bytes=256, wbuf_rows=32, bbuf_rows=2,
                     obuf_bytes=64, mem_latency=3, mem_words=1024)
    layer = random_layer("conv", 2, 3, 3, 1, 1, 4, seed=4, exp_bits=cfg.exp_bits,
                         acc_bits=cfg.acc_bits)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    (ev,) = events_from_bundle(prog)
    assert ev["macs"] == ev["shift_adds"] == 3 * 16 * 2 * 9
    assert ev["requants"] == 48
    steps = 1 * (16 // 2) * 18                 # groups x pixel tiles x reduction steps
    assert ev["buffers"]["ACT"]["reads"] == 2 * steps
    assert ev["buffers"]["WGT"]["reads"] == steps
    assert ev["buffers"]["OUT"]["writes"] == 48
    assert ev["ext_bytes"] == 2 * 16 + 3 * 16
    assert ev["ext_weight_bytes"] == prog.layers[0].weight_bytes == 2 * 9 * 8   # 8-byte rows
    assert ev["ext_param_bytes"] == prog.layers[0].bias_bytes == 32
    assert ev["ext_dense_weight_bytes"] == ev["ext_weight_bytes"]
    assert "codebook_reads" not in ev
    res = network_energy([ev], acc_bits=cfg.acc_bits)
    # raw 8-bit codes move as many bytes as int8 weights: shiftbook wins on arithmetic only
    bd = {d: res.breakdown(d) for d in ("shiftbook", "int8", "fp32")}
    assert bd["shiftbook"]["dram"] == bd["int8"]["dram"] < bd["fp32"]["dram"]
    assert bd["shiftbook"]["arith"] < bd["int8"]["arith"] < bd["fp32"]["arith"]
    assert res.totals["fp32"] > res.totals["int8"] > res.totals["shiftbook"] > 0


def _twin(weights: str, k: int | None = None, d: int | None = None):
    from shiftbook.config import CoreConfig
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.estimate.energy import events_from_bundle
    from shiftbook.sw.reference import random_layer

    cfg = CoreConfig(rows=2, cols=4, bus_bytes=4, abuf_bytes=1024, wbuf_rows=1024, bbuf_rows=4,
                     obuf_bytes=256, mem_latency=3, mem_words=4096, max_k=16, max_d=9)
    layer = random_layer("conv", 16, 8, 3, 1, 1, 6, seed=3, exp_bits=cfg.exp_bits,
                         weights=weights, k=k, d=d)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    (ev,) = events_from_bundle(prog)
    return cfg, prog, ev


def test_codebook_layer_moves_its_indices_not_its_codes() -> None:
    """A pq (k=16, d=9) 16->8 3x3 conv on 6x6 and its raw shift twin, counted by hand.

    4 columns -> 2 groups; 6x6 output / 2 rows -> 18 pixel tiles; 16*9 = 144 steps per tile.
    Raw: 144 WGT rows of 4 bytes per group -> 1152 bytes, one row read per step.
    pq: 16 blocks (one 3x3 kernel each) per column, 4-bit indices, 4 columns -> 16-bit index
    rows, 2 per 4-byte WGT row -> 8 rows (32 bytes) per group; codebook 16*9 = 144 bytes."""
    cfg, raw_prog, raw = _twin("shift")
    _, pq_prog, pq = _twin("pq", 16, 9)
    assert pq_prog.layers[0].weights.idx_per_row == 2
    tiles = 2 * 18
    assert raw["ext_weight_bytes"] == 2 * 144 * 4 == 1152
    assert pq["ext_weight_bytes"] == 2 * 8 * 4 + 16 * 9 == 208
    assert raw["ext_bytes"] == pq["ext_bytes"] and raw["ext_param_bytes"] == pq["ext_param_bytes"]
    assert raw["buffers"]["WGT"]["reads"] == tiles * 144
    assert pq["buffers"]["WGT"]["reads"] == tiles * 8
    assert pq["buffers"]["WGT"]["writes"] == 2 * 8
    assert pq["codebook_reads"] == tiles * 144 * 4                  # one code per column
    assert pq["codebook_bytes"] == 16 * 9 * 6 // 8                  # the lane: max_k*max_d codes
    assert pq["codebook_writes"] == 16 * 9 * 4                      # every lane gets the codebook
    # the baselines store one weight per byte: same counts for both twins
    assert pq["ext_dense_weight_bytes"] == raw["ext_dense_weight_bytes"] == 1152
    assert pq["buffers"]["WGT"]["dense_reads"] == raw["buffers"]["WGT"]["reads"]
    r, p = (network_energy([e], acc_bits=cfg.acc_bits) for e in (raw, pq))
    dram = {n: res.breakdown("shiftbook")["dram"] for n, res in (("raw", r), ("pq", p))}
    assert dram["raw"] - dram["pq"] == pytest.approx((1152 - 208) * 162.5)
    for design in ("int8", "fp32"):
        assert r.totals[design] == pytest.approx(p.totals[design])
    t = load_table()
    assert p.breakdown("shiftbook")["codebook"] == pytest.approx(
        tiles * 144 * 4 * t.sram(108, 6) + 16 * 9 * 4 * t.sram(108, 6, write=True))
    assert p.breakdown("shiftbook")["sram:WGT"] == pytest.approx(tiles * 8 * t.sram(4096, 32)
                                                                 + 16 * t.sram(4096, 32))
    assert p.totals["shiftbook"] < r.totals["shiftbook"]
