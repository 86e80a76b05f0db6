"""The codebook core (WFMT=1) as Verilog under Verilator: the hand-assembled programs of
test_core_codebook.py on the ``tiny`` preset (the cached build the layer tests share)."""

from __future__ import annotations

import pytest

from shiftbook.config import PRESETS

from .test_core_codebook import codebook_conv

pytestmark = pytest.mark.rtl

TINY = PRESETS["tiny"]


def _run(image: bytes, **kw):
    runner = pytest.importorskip("shiftbook.sim.rtl.runner")
    return runner, runner.run_image(TINY, image, **kw)


@pytest.mark.parametrize("stall_seed", [None, 3])
def test_codebook_layer_sequence_in_verilog(stall_seed):
    # d=9 -> d=4 (cut blocks) -> raw -> d=1 -> k=256 (8-bit indices), one program, with and
    # without memory stalls
    passes = [dict(k=16, d=9), dict(k=7, d=4), dict(k=16, d=9, raw=True), dict(k=3, d=1),
              dict(k=256, d=9)]
    image, expected, _ = codebook_conv(TINY, cin=3, cout=2, h=4, w=5, kk=3, pad=1,
                                       passes=passes, seed=21)
    _, res = _run(image, stall_seed=stall_seed)
    got = {a: (res.memory[a] ^ 0x80) - 0x80 for a in expected}
    bad = [(a, got[a], v) for a, v in expected.items() if got[a] != v]
    assert not bad, f"{len(bad)} wrong bytes, first (addr, got, want) {bad[:4]}"
    assert [m[0] for m in res.marks] == [1, 2, 11, 12, 21, 22, 31, 32, 41, 42, 7]


def test_codebook_index_past_codebook_is_an_error_in_verilog():
    runner = pytest.importorskip("shiftbook.sim.rtl.runner")
    image, _, _ = codebook_conv(TINY, cin=2, cout=2, h=3, w=3, kk=3, pad=1, k=6, d=9,
                                oob=True, seed=8)
    with pytest.raises(runner.RtlRunError):
        runner.run_image(TINY, image)
