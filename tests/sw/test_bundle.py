"""Program bundle: round trip, determinism, and one-line errors for every kind of damage."""

from __future__ import annotations

import json

import numpy as np
import pytest

from shiftbook.config import PRESETS
from shiftbook.sim.functional import run_program
from shiftbook.sw.bundle import (
    BUNDLE_VERSION,
    BundleError,
    load_bundle,
    sign_manifest,
    write_bundle,
)
from shiftbook.sw.compiler import compile_graph
from shiftbook.sw.reference import random_layer, run_graph

CFG = PRESETS["small"]


@pytest.fixture()
def built(tmp_path):
    layer = random_layer("conv", 5, 9, 3, 2, None, 9, seed=2)
    prog = compile_graph(layer.graph, CFG, layer.inputs)
    path = write_bundle(prog, layer.graph, tmp_path / "b")
    return layer, prog, path


def test_round_trip(built):
    layer, prog, path = built
    b = load_bundle(path, CFG)
    assert b.memory == prog.memory
    assert b.config == CFG and b.manifest.config_hash == CFG.hash
    assert b.program == prog.insns
    assert b.layers == prog.layers
    written = json.loads((path / "manifest.json").read_text())["layers"]
    assert [lay.to_dict() for lay in b.layers] == written
    assert b.ideal_cycles == prog.ideal_cycles
    assert np.array_equal(b.inputs()["x"], layer.inputs["x"])
    g = b.graph()
    assert np.array_equal(g.ops[0].weight, layer.op.weight)
    # The golden level from the bundle alone equals the golden level from the source.
    assert np.array_equal(run_graph(g, b.inputs())["y"], run_graph(layer.graph, layer.inputs)["y"])
    # And the functional level runs from the bundle's memory image.
    res = run_program(b.config, b.memory)
    assert np.array_equal(b.read_tensors(res.memory)["y"], run_graph(g, b.inputs())["y"])
    t = b.tensors["y"]
    assert t.shape == (9, 5, 5) and t.addr % CFG.bus_bytes == 0 and t.pitch == 8


def test_deterministic_bytes(built, tmp_path):
    layer, prog, path = built
    again = compile_graph(layer.graph, CFG, layer.inputs)
    other = write_bundle(again, layer.graph, tmp_path / "c")
    names = sorted(p.name for p in path.iterdir())
    assert names == sorted(p.name for p in other.iterdir())
    assert {"manifest.json", "memory.bin", "ir.json", "ir.npz"} <= set(names)
    for n in names:
        assert (path / n).read_bytes() == (other / n).read_bytes(), n


def test_overwrite_is_atomic_replace(built):
    layer, prog, path = built
    (path / "stale.txt").write_text("old")
    write_bundle(prog, layer.graph, path)
    assert not (path / "stale.txt").exists()
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    load_bundle(path)


def test_missing_bundle_and_files(built, tmp_path):
    _, _, path = built
    with pytest.raises(BundleError, match="does not exist"):
        load_bundle(tmp_path / "nope")
    (path / "ir.npz").unlink()
    with pytest.raises(BundleError, match="missing file ir.npz"):
        load_bundle(path)


def test_corrupted_memory_is_detected(built):
    _, _, path = built
    data = bytearray((path / "memory.bin").read_bytes())
    data[100] ^= 1
    (path / "memory.bin").write_bytes(bytes(data))
    with pytest.raises(BundleError, match=r"memory.bin is corrupted \(sha256 mismatch\)"):
        load_bundle(path)


def _edit(path, fn):
    m = json.loads((path / "manifest.json").read_text())
    fn(m)
    (path / "manifest.json").write_text(json.dumps(sign_manifest(m)))   # past the digest


def test_unknown_version(built):
    _, _, path = built
    _edit(path, lambda m: m.update(version=BUNDLE_VERSION + 1))
    with pytest.raises(BundleError, match="unknown bundle version"):
        load_bundle(path)


def test_config_mismatch(built):
    _, _, path = built
    with pytest.raises(BundleError, match="compiled for core config 'small'.*not for 'tiny'"):
        load_bundle(path, PRESETS["tiny"])


def test_edited_config_breaks_the_hash(built):
    _, _, path = built
    _edit(path, lambda m: m["config"].update(rows=8))
    with pytest.raises(BundleError, match="does not match its config"):
        load_bundle(path)


def test_garbage_manifest(built):
    _, _, path = built
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="manifest.json is corrupted"):
        load_bundle(path)
    (path / "manifest.json").write_text(json.dumps({"format": "zip"}))
    with pytest.raises(BundleError, match="not a shiftbook-bundle manifest"):
        load_bundle(path)


def test_manifest_digest_covers_the_config(built, tmp_path):
    """Another preset's config (and its matching hash) pasted into a manifest is refused."""
    import shutil

    from shiftbook.config import PRESETS

    _, _, path = built
    dst = tmp_path / "swapped"
    shutil.copytree(path, dst)
    m = json.loads((dst / "manifest.json").read_text())
    other = next(c for n, c in PRESETS.items() if c.hash != m["config_hash"])
    m["config"], m["config_hash"] = other.to_dict(), other.hash
    (dst / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match=r"does not match its digest"):
        load_bundle(dst)
    # re-signed, the program is checked against the config it now claims
    (dst / "manifest.json").write_text(json.dumps(sign_manifest(m)))
    with pytest.raises(BundleError):
        load_bundle(dst)
