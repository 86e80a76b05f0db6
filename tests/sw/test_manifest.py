"""The typed manifest: a round trip is exact, and every malformed field is refused on load
with one line naming the field (and the layer or tensor), never a KeyError or TypeError."""

from __future__ import annotations

import copy
import json
import shutil

import pytest

from shiftbook.config import PRESETS
from shiftbook.manifest import LayerMeta, ManifestError, parse_manifest
from shiftbook.sw.bundle import BundleError, load_bundle, sign_manifest, write_bundle
from shiftbook.sw.compiler import compile_graph
from shiftbook.sw.reference import random_layer

CFG = PRESETS["tiny"]


@pytest.fixture(scope="module")
def bundle_dir(tmp_path_factory):
    layer = random_layer("conv", 4, 7, 3, 2, None, 6, seed=1)
    prog = compile_graph(layer.graph, CFG, layer.inputs)
    return write_bundle(prog, layer.graph, tmp_path_factory.mktemp("m") / "b")


def _manifest(bundle_dir):
    return json.loads((bundle_dir / "manifest.json").read_text())


def test_round_trip_is_exact(bundle_dir):
    m = _manifest(bundle_dir)
    typed = parse_manifest(m)
    assert typed.to_dict() == m
    assert all(isinstance(lay, LayerMeta) for lay in typed.layers)
    lay = typed.layers[0]
    assert LayerMeta.from_dict(lay.to_dict()) == lay
    assert lay.tiles.groups >= 1 and lay.weights.wfmt == 0 and lay.kernel == (3, 3)


def _edit(f):
    def apply(m):
        f(m)
        return m
    return apply


CASES = [
    ("layers", _edit(lambda m: m.__setitem__("layers", {})), "field 'layers' is dict, not a list"),
    ("shape", _edit(lambda m: m["tensors"][0].__setitem__("shape", "4x7x7")),
     "field 'shape' is '4x7x7', not a list of 3 integers"),
    ("memory", _edit(lambda m: m.__setitem__("memory", None)), "memory is None, not an object"),
    ("inputs", _edit(lambda m: m.__setitem__("inputs", [])), "lists no inputs"),
    ("macs", _edit(lambda m: m["layers"][0].pop("macs")), "lacks field 'macs'"),
    ("macs type", _edit(lambda m: m["layers"][0].__setitem__("macs", "12")),
     "field 'macs' is '12', not an integer"),
    ("bool", _edit(lambda m: m["layers"][0].__setitem__("computes", True)),
     "field 'computes' is True, not an integer"),
    ("negative", _edit(lambda m: m["layers"][0].__setitem__("weight_addr", -4)), "below 0"),
    ("kernel", _edit(lambda m: m["layers"][0].__setitem__("kernel", [3])),
     "field 'kernel' is [3], not a list of 2 integers"),
    ("bands", _edit(lambda m: m["layers"][0]["tiles"].__setitem__("bands", [[0]])),
     "tiles: field 'bands'"),
    ("wfmt", _edit(lambda m: m["layers"][0]["weights"].pop("wfmt")), "weights lacks field 'wfmt'"),
    ("unknown", _edit(lambda m: m["layers"][0].__setitem__("macz", 1)), "unknown field 'macz'"),
    ("tensor ref", _edit(lambda m: m["layers"][0].__setitem__("output", "nope")),
     "its output 'nope' is not a tensor"),
    ("index", _edit(lambda m: m["layers"][0].__setitem__("index", 3)), "has index 3"),
    ("program", _edit(lambda m: m["program"].__setitem__("bytes", "x")),
     "program: field 'bytes' is 'x'"),
    ("ir", _edit(lambda m: m.pop("ir")), "lacks field 'ir'"),
    ("config", _edit(lambda m: m.__setitem__("config", "tiny")), "config is 'tiny', not an object"),
    ("beyond", _edit(lambda m: m["tensors"][0].__setitem__("addr", 1 << 30)),
     "lies beyond the memory image"),
    ("weights beyond", _edit(lambda m: m["layers"][0].__setitem__("weight_bytes", 1 << 30)),
     "lie beyond the memory image"),
    ("pitch", _edit(lambda m: m["tensors"][0].__setitem__("pitch", 1)), "cannot hold"),
]


@pytest.mark.parametrize("name,edit,message", CASES, ids=[c[0] for c in CASES])
def test_malformed_manifest_is_refused_with_the_field(bundle_dir, tmp_path, name, edit, message):
    d = tmp_path / "b"
    shutil.copytree(bundle_dir, d)
    m = sign_manifest(edit(copy.deepcopy(_manifest(bundle_dir))))  # re-signed: past the digest
    (d / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="manifest.json|beyond") as e:
        load_bundle(d)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_parse_manifest_refuses_non_objects():
    for bad in (None, [], "x", 3):
        with pytest.raises(ManifestError, match="not a JSON object"):
            parse_manifest(bad)


def _rewrite(bundle_dir, tmp_path, edit):
    d = tmp_path / "b"
    shutil.copytree(bundle_dir, d)
    m = sign_manifest(edit(copy.deepcopy(_manifest(bundle_dir))))
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def test_layers_must_be_the_programs(bundle_dir, tmp_path):
    d = _rewrite(bundle_dir, tmp_path, _edit(lambda m: m.__setitem__("layers", [])))
    with pytest.raises(BundleError, match=r"the program's MARKs \[0\] do not match the "
                                          r"manifest's 0 layer"):
        load_bundle(d)


def test_another_presets_config_is_refused(bundle_dir, tmp_path):
    other = PRESETS["base"]

    def swap(m):
        m["config"], m["config_hash"] = other.to_dict(), other.hash
        return m

    with pytest.raises(BundleError, match="was tiled for a 2x2 array, its config 'base'"):
        load_bundle(_rewrite(bundle_dir, tmp_path, swap))
