"""The layer corpus of issue 2 at L2: every layer shape bit-exact in RTL against golden (and so
against the functional level, which `run_layer` checks the same way), on three CoreConfigs
(2x2 'tiny', 4x8 'small', 16x16 'base'). One cached Verilator build per config."""

from __future__ import annotations

import argparse

import pytest

from shiftbook.sim.layer import run_layer

pytestmark = pytest.mark.rtl

# name -> (op, cin, cout, kernel, stride, padding, size, weights_dist, input_dist)
CORPUS = {
    "1x1": ("conv", 8, 8, 1, 1, 0, 6, "normal", "normal"),
    "3x3-3to13": ("conv", 3, 13, 3, 1, 1, 7, "normal", "normal"),
    "7x7-27to5-s2-p3": ("conv", 27, 5, 7, 2, 3, 11, "normal", "normal"),
    "3x3-s2-nopad": ("conv", 16, 9, 3, 2, 0, 9, "normal", "uniform"),
    "5x5-p1": ("conv", 6, 7, 5, 1, 1, 8, "sparse", "normal"),
    "linear-40to13": ("linear", 40, 13, 1, 1, 0, 1, "normal", "normal"),
    "zero-weights": ("conv", 5, 6, 3, 1, 1, 6, "zero", "normal"),
    "zero-input": ("conv", 5, 6, 3, 1, 1, 6, "normal", "zero"),
    "extreme-saturating": ("conv", 8, 8, 3, 1, 1, 6, "extreme", "extreme"),
}


def _args(config, op, cin, cout, k, s, p, size, wd, idist, level="rtl"):
    return argparse.Namespace(op=op, cin=cin, cout=cout, kernel=k, stride=s, padding=p,
                              size=size, seed=7, config=config, weights_dist=wd,
                              input_dist=idist, no_relu=False, residual=False, json=True,
                              output=None, level=level)


@pytest.mark.parametrize("config", ["tiny", "small", "base"])
@pytest.mark.parametrize("case", list(CORPUS))
def test_layer_bit_exact_in_rtl(config, case):
    rec = run_layer(_args(config, *CORPUS[case]))
    assert rec["first_mismatch"] is None, rec["first_mismatch"]
    assert rec["bit_exact"] and rec["mismatches"] == 0
    assert rec["cycles_source"] == "rtl"
    assert rec["cycles"] >= rec["ideal_cycles"] > 0
    # `shiftbook layer --level functional` reports the exact cycle model: the RTL's count.
    fun = run_layer(_args(config, *CORPUS[case], level="functional"))
    assert fun["bit_exact"] and fun["cycles_source"] == "estimate"
    assert fun["cycles"] == rec["cycles"], (fun["cycles"], rec["cycles"])


def test_extreme_case_really_saturates():
    """The saturation case must reach both int8 rails, or it tests nothing."""
    import numpy as np

    from shiftbook.config import load_config
    from shiftbook.sw.reference import random_layer, run_graph

    cfg = load_config("small")
    layer = random_layer("conv", 8, 8, 3, 1, 1, 6, seed=7, exp_bits=cfg.exp_bits,
                         acc_bits=cfg.acc_bits, weights_dist="extreme", input_dist="extreme",
                         relu=False)
    y = np.asarray(run_graph(layer.graph, layer.inputs)["y"])
    assert (y == 127).any() and (y == -128).any()
