"""Every compression method's output compiles and runs bit-exact at the functional level (issue
5): `shiftbook compress` (tiny settings, seeded random data: quality is not the point here) ->
`shiftbook compile` -> every layer of the functional run equals golden. The codebook methods'
RTL runs are in tests/test_resnet_rtl.py."""

from __future__ import annotations

import pytest
from test_resnet_rtl import _compress  # tests/ is on sys.path (rootdir conftest)

from shiftbook.cli import main


@pytest.mark.parametrize("method", ["deepshift-q", "deepshift-ps", "inq", "kmeans", "pq"])
def test_compressed_resnet8_functional_bit_exact(tmp_path, method):
    from shiftbook.sim.network import simulate_bundle

    ckpt = tmp_path / "m.pt"
    formats = _compress("resnet8", method, ckpt)
    assert formats, "compression produced no hardware formats"
    bundle = tmp_path / "b"
    assert main(["compile", str(ckpt), "--config", "small", "--calib", "4",
                 "-o", str(bundle)]) == 0
    rec = simulate_bundle(bundle, "functional").record
    assert rec["bit_exact"], rec
    assert len(rec["layers"]) >= 10 and all(lay["bit_exact"] for lay in rec["layers"])
