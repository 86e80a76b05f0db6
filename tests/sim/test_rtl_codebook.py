"""Codebook weights (WFMT=1) at L2: every format and block layout bit-exact in RTL against
golden (and against the functional level, which `run_layer` checks the same way), including
k=2048, channel counts that do not divide d or the array; and decoding costs no throughput
(RTL cycles vs the same layer stored as raw codes). Three cached Verilator builds: tiny,
small, small-k2048."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pytest

from shiftbook.sim.layer import run_layer

pytestmark = pytest.mark.rtl

# name -> (config, op, cin, cout, kernel, size, weights, k, d)
CASES = {
    "tiny-kmeans-k2": ("tiny", "conv", 5, 3, 3, 5, "kmeans", 2, None),
    "tiny-pq-kernel-d9": ("tiny", "conv", 5, 3, 3, 5, "pq", 16, 9),
    "tiny-pq-subkernel-d3-k5": ("tiny", "conv", 4, 3, 3, 5, "pq", 5, 3),
    "tiny-linear-d4-pad": ("tiny", "linear", 10, 3, 1, 1, "pq", 8, 4),
    "small-pq-channels-d18-pad": ("small", "conv", 5, 11, 3, 6, "pq", 37, 18),
    "small-linear-d8-pad": ("small", "linear", 37, 9, 1, 1, "pq", 256, 8),
    "small-1x1-d4": ("small", "conv", 7, 10, 1, 5, "pq", 100, 4),
    "small-kmeans-k256": ("small", "conv", 6, 9, 3, 5, "kmeans", 256, None),
    "k2048-pq-d18": ("small-k2048", "conv", 7, 9, 3, 5, "pq", 2048, 18),
    "k2048-kmeans-linear": ("small-k2048", "linear", 21, 10, 1, 1, "kmeans", 2048, None),
}


def _args(config, op, cin, cout, kernel, size, weights, k, d, level="rtl"):
    return argparse.Namespace(op=op, cin=cin, cout=cout, kernel=kernel, stride=1,
                              padding=None, size=size, seed=5, config=config,
                              weights_dist="normal", input_dist="normal", no_relu=False,
                              residual=False, json=True, output=None, level=level,
                              weights=weights, k=k, d=d)


@pytest.mark.parametrize("case", list(CASES))
def test_codebook_layer_bit_exact_in_rtl(case):
    rec = run_layer(_args(*CASES[case]))
    assert rec["first_mismatch"] is None, rec["first_mismatch"]
    assert rec["bit_exact"] and rec["mismatches"] == 0
    assert rec["cycles_source"] == "rtl"
    assert rec["k"] == CASES[case][7]


def rtl_cycles_codebook_vs_raw(config: str, op: str, cin: int, cout: int, kernel: int,
                               size: int, weights: str, k: int, d: int | None,
                               seed: int = 5) -> dict[str, int]:
    """RTL cycles of a codebook layer and of the same layer (same decoded codes) stored as
    raw shift codes; both bit-exact against golden."""
    from shiftbook.config import load_config
    from shiftbook.placement import unpack_tensor
    from shiftbook.sim.compare import compare_tensors
    from shiftbook.sim.rtl.runner import run_bundle
    from shiftbook.sw.bundle import write_bundle
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer, run_graph

    cfg = load_config(config)
    layer = random_layer(op, cin, cout, kernel, size=size, seed=seed, exp_bits=cfg.exp_bits,
                         acc_bits=cfg.acc_bits, weights=weights, k=k, d=d)
    golden = run_graph(layer.graph, layer.inputs)
    out: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="shiftbook-cb-") as tmp:
        for fmt in ("codebook", "raw"):
            if fmt == "raw":
                layer.op.with_codebook(None)
            prog = compile_graph(layer.graph, cfg, layer.inputs)
            bdir = write_bundle(prog, layer.graph, Path(tmp) / fmt)
            res = run_bundle(bdir)
            got = {n: unpack_tensor(res.memory, p) for n, p in prog.tensors.items()}
            cmp = compare_tensors(prog.layers, golden, got)
            assert cmp.bit_exact, (fmt, cmp.to_dict()["first_mismatch"])
            out[f"{fmt}_cycles"] = int(res.cycles)
            out[f"{fmt}_weight_bytes_read"] = int(prog.layers[0].weight_bytes_read)
    return out


@pytest.mark.parametrize("case", [("small", "conv", 64, 32, 3, 10, "pq", 256, 9),
                                  ("small", "conv", 128, 64, 1, 12, "pq", 256, 8)])
def test_decoding_costs_no_throughput(case):
    """pq layers in RTL within 2% of the same layers with raw codes, the layer's codebook
    load included; and without it (the decoder itself) within 0.5%."""
    r = rtl_cycles_codebook_vs_raw(*case)
    assert r["codebook_cycles"] <= 1.02 * r["raw_cycles"], r
    cb_load = -(-256 * case[8] // 8)  # words of the one LOAD CB, one per cycle
    assert r["codebook_cycles"] - cb_load <= 1.005 * r["raw_cycles"], r
    assert r["codebook_weight_bytes_read"] < r["raw_weight_bytes_read"], r
