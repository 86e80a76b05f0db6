"""The calibration cache (sw/frontend/calib_cache.py, ``compile --calib-cache``): a hit gives
the same bundle as quantizing again, every input of the quantizer is in the key, and a damaged
entry is recomputed, not trusted."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from shiftbook import flow
from shiftbook.config import PRESETS


def _bundle_bytes(c) -> tuple[bytes, str]:
    man = json.loads((c.bundle / "manifest.json").read_text())
    return (c.bundle / "memory.bin").read_bytes(), json.dumps(man, sort_keys=True)


def test_hit_equals_a_fresh_quantization(tmp_path):
    cache = tmp_path / "cache"
    plain = flow.compile("resnet8", config="tiny", calib=2, output=tmp_path / "plain")
    first = flow.compile("resnet8", config="tiny", calib=2, output=tmp_path / "a",
                         calib_cache=cache)
    assert first.info["calib_cache"].startswith("stored")
    calls = []
    second = flow.compile("resnet8", config="tiny", calib=2, output=tmp_path / "b",
                          calib_cache=cache, progress=lambda *a: calls.append(a))
    assert second.info["calib_cache"].startswith("hit") and calls == []   # not quantized
    assert _bundle_bytes(second) == _bundle_bytes(first) == _bundle_bytes(plain)
    assert second.lowered.layers == json.loads(json.dumps(first.lowered.layers))
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 1


def test_every_input_of_the_quantizer_is_in_the_key():
    from shiftbook.sw.frontend.calib_cache import cache_key
    from shiftbook.sw.frontend.float_net import FLayer, FloatNet

    lay = FLayer("conv", "c", "x", "y", (2, 4, 4), "c", weight=np.ones((2, 1, 3, 3)),
                 bias=np.zeros(2), padding=(1, 1, 1, 1), kernel=(3, 3), relu=True)
    net = FloatNet("x", (1, 4, 4), [lay], ["y"], {"x": (1, 4, 4), "y": (2, 4, 4)})
    img = np.zeros((2, 1, 4, 4))
    cfg = PRESETS["tiny"]
    base = cache_key(net, img, cfg, {"o": 1})
    assert cache_key(net, img.copy(), dataclasses.replace(cfg, name="other"), {"o": 1}) == base
    w = lay.weight.copy()
    w[1, 0, 2, 2] = np.nextafter(1.0, 2.0)                  # one ulp of one weight
    changed = [
        (dataclasses.replace(net, layers=[dataclasses.replace(lay, weight=w)]), img, cfg, {"o": 1}),
        (dataclasses.replace(net, layers=[dataclasses.replace(lay, relu=False)]), img, cfg,
         {"o": 1}),
        (dataclasses.replace(net, layers=[dataclasses.replace(lay, stride=(2, 2))]), img, cfg,
         {"o": 1}),
        (net, img + 2.0**-40, cfg, {"o": 1}),
        (net, img, dataclasses.replace(cfg, acc_bits=24), {"o": 1}),
        (net, img, dataclasses.replace(cfg, rows=4), {"o": 1}),
        (net, img, cfg, {"o": 2}),
    ]
    keys = [cache_key(*c) for c in changed]
    assert base not in keys and len(set(keys)) == len(keys)


def test_a_damaged_entry_is_recomputed(tmp_path):
    cache = tmp_path / "cache"
    a = flow.compile("resnet8", config="tiny", calib=1, output=tmp_path / "a", calib_cache=cache)
    (entry,) = [p for p in cache.iterdir() if not p.name.startswith(".")]
    (entry / "ir.npz").write_bytes(b"not a zip")
    b = flow.compile("resnet8", config="tiny", calib=1, output=tmp_path / "b", calib_cache=cache)
    assert "unreadable" in b.info["calib_cache"] and str(entry) in b.info["calib_cache"]
    assert _bundle_bytes(b) == _bundle_bytes(a)
    c = flow.compile("resnet8", config="tiny", calib=1, output=tmp_path / "c", calib_cache=cache)
    assert c.info["calib_cache"].startswith("hit")           # the entry was rewritten


def test_a_cache_path_that_is_a_file_is_refused_before_work(tmp_path):
    import pytest

    from shiftbook.sw.flow_compile import CompileError

    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(CompileError, match="not a directory"):
        flow.compile("resnet8", config="tiny", calib=1, output=tmp_path / "b", calib_cache=f)
    assert not (tmp_path / "b").exists()
