"""Fuzz targets for every reader of outside data, shared by tests/fuzz and bench/bench_fuzz.py.

Each target takes one generated input (a hypothesis strategy draws it), feeds it to a
reader and classifies the result with :func:`outcome`: the reader either loads it or refuses
it with the project's error: one of the exception types the CLI turns into one line
(``shiftbook/cli.py``: ``ValueError``, ``RuntimeError``, ``OSError``, ``KeyError``) with a
non-empty message, and nothing printed to stdout/stderr and no warning meanwhile. Anything
else (another exception, an empty message, output or a warning) is a :class:`Crash`.

Readers: the bundle loader (``sw.bundle.load_bundle`` over ``shiftbook.manifest``), the
CoreConfig loader (``shiftbook.config.load_config``), the UART host link's reply parsing
(``sw.host.Board`` over a fake transport), the ``.pt2`` model reader and the ONNX / QONNX
reader (both ``sw.frontend.source.load_source``; ONNX inputs are byte mutations of a small
valid model and structural edits of it: attributes, initializer shapes and values, node
inputs, dropped nodes, op types).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

__all__ = ["Crash", "outcome", "Fixture", "make_fixture", "TARGETS", "CLI_ERRORS"]

#: What ``shiftbook.cli`` turns into one error line.
CLI_ERRORS = (ValueError, RuntimeError, OSError, KeyError)


class Crash(AssertionError):
    """An input that neither loaded nor got the project's one-line error."""


def outcome(fn: Callable[[], Any]) -> str:
    """``"loaded"`` or ``"refused"``; raises :class:`Crash` for anything else."""
    out, err = io.StringIO(), io.StringIO()
    with warnings.catch_warnings(record=True) as caught, contextlib.redirect_stdout(out), \
            contextlib.redirect_stderr(err):
        warnings.simplefilter("always")
        try:
            fn()
            result = "loaded"
        except CLI_ERRORS as e:
            msg = str(e).strip()
            if not msg:
                raise Crash(f"{type(e).__name__} with an empty message") from e
            result = "refused"
        except Exception as e:  # noqa: BLE001 - any other exception is the bug we look for
            raise Crash(f"{type(e).__name__}: {e}") from e
    printed = (out.getvalue() + err.getvalue()).strip()
    if printed:
        raise Crash(f"printed while reading: {printed[:300]!r}")
    if caught and result == "refused":
        raise Crash(f"a warning escaped: {caught[0].category.__name__}: {caught[0].message}")
    return result


@dataclass
class Fixture:
    """Valid inputs every target mutates: a bundle, its manifest, a config, a ``.pt2``, an
    ``.onnx`` (serialized)."""

    root: Path
    bundle: Path
    manifest: dict
    pt2: bytes
    config: dict
    onnx: bytes


def make_fixture(root: Path) -> Fixture:
    """Compile the small valid model of tests/bad_inputs into a bundle (once per session)."""
    from tests.bad_inputs.runner import make_fixtures

    fx = make_fixtures(root)
    from shiftbook.config import PRESETS

    return Fixture(root, fx.bundle, json.loads((fx.bundle / "manifest.json").read_text()),
                   fx.model.read_bytes(), PRESETS["tiny"].to_dict(),
                   small_onnx().SerializeToString())


def small_onnx() -> Any:
    """A valid float ONNX CNN the frontend imports: Conv, BatchNormalization, Relu, MaxPool,
    a residual Add, GlobalAveragePool, Flatten, Gemm (1x1x8x8 input, 10 classes)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)

    def init(name: str, *shape: int) -> Any:
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32) * 0.3, name)

    inits = [init("w1", 4, 1, 3, 3), init("b1", 4), init("w2", 4, 4, 3, 3),
             numpy_helper.from_array(np.ones(4, np.float32), "g"), init("be", 4),
             init("mu", 4), numpy_helper.from_array(np.ones(4, np.float32), "var"),
             init("wf", 10, 4), init("bf", 10)]
    nodes = [
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Conv", ["r1", "w2"], ["c2"], name="conv2", pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c2", "g", "be", "mu", "var"], ["n2"],
                         name="bn2"),
        helper.make_node("Add", ["n2", "r1"], ["a"], name="add"),
        helper.make_node("Relu", ["a"], ["r2"], name="relu2"),
        helper.make_node("MaxPool", ["r2"], ["p"], name="pool", kernel_shape=[2, 2],
                         strides=[2, 2]),
        helper.make_node("GlobalAveragePool", ["p"], ["g1"], name="gap"),
        helper.make_node("Flatten", ["g1"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], name="fc", transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    return model


# ------------------------------------------------------------------ JSON mutation
_json_leaf = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                       st.floats(allow_nan=True), st.text(max_size=12))
JSON = st.recursive(_json_leaf, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=8)


def _paths(obj: Any, prefix: tuple = ()) -> list[tuple]:
    """Every path (keys and indices) inside a JSON value."""
    out = [prefix]
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:6]):      # a few elements of long lists are enough
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated_json(draw, base: dict, rounds: int = 3) -> dict:
    """``base`` with up to ``rounds`` edits: a value replaced, a key dropped or one added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, rounds))):
        paths = [p for p in _paths(doc) if p]
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = doc
        for k in path[:-1]:
            parent = parent[k]
        kind = draw(st.sampled_from(["replace", "drop", "add", "number"]))
        if kind == "replace":
            parent[path[-1]] = draw(JSON)
        elif kind == "drop":
            del parent[path[-1]]
        elif kind == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(JSON)
        elif isinstance(parent[path[-1]], int) and not isinstance(parent[path[-1]], bool):
            parent[path[-1]] += draw(st.sampled_from([-1, 1, -2**31, 2**31, 2**40]))
    return doc


def _byte_mutations(data: bytes) -> st.SearchStrategy[bytes]:
    """Truncations, flipped byte runs, inserted junk and plain random bytes of ``data``."""
    n = len(data)

    @st.composite
    def mutate(draw) -> bytes:
        kind = draw(st.sampled_from(["truncate", "flip", "insert", "random"]))
        if kind == "truncate":
            return data[:draw(st.integers(0, n))]
        if kind == "random":
            return draw(st.binary(max_size=512))
        at = draw(st.integers(0, n))
        junk = draw(st.binary(min_size=1, max_size=64))
        if kind == "insert":
            return data[:at] + junk + data[at:]
        return data[:at] + bytes(b ^ j for b, j in zip(data[at:at + len(junk)], junk,
                                                        strict=False)) + data[at + len(junk):]
    return mutate()


# ------------------------------------------------------------------ targets
def _bundle_input(fx: Fixture) -> st.SearchStrategy:
    from shiftbook.sw.bundle import sign_manifest

    manifest = mutated_json(fx.manifest).map(lambda m: ("manifest", sign_manifest(m)))
    files = sorted(p.name for p in fx.bundle.iterdir() if p.is_file())
    raw = st.sampled_from(files).flatmap(
        lambda name: _byte_mutations((fx.bundle / name).read_bytes()).map(
            lambda b: ("file", name, b)))
    return st.one_of(manifest, raw)


def _run_bundle(fx: Fixture, inp: Any, work: Path) -> None:
    from shiftbook.sw.bundle import load_bundle

    b = work / "bundle"
    if b.exists():
        shutil.rmtree(b)
    shutil.copytree(fx.bundle, b)
    if inp[0] == "manifest":
        (b / "manifest.json").write_text(json.dumps(inp[1]))
    else:
        (b / inp[1]).write_bytes(inp[2])

    def read() -> None:
        bundle = load_bundle(b)
        bundle.layers, bundle.program, bundle.tensors   # noqa: B018 - the lazy readers too
        bundle.inputs()
    return read


def _config_input(fx: Fixture) -> st.SearchStrategy:
    text = mutated_json(fx.config).map(json.dumps)
    return st.one_of(text.map(str.encode), _byte_mutations(json.dumps(fx.config).encode()))


def _run_config(fx: Fixture, inp: bytes, work: Path) -> Callable[[], Any]:
    from shiftbook.config import load_config

    p = work / "config.json"
    p.write_bytes(inp)
    return lambda: load_config(p)


def _host_input(fx: Fixture) -> st.SearchStrategy:
    from shiftbook import protocol as proto

    good = proto.reply(0, bytes(proto.INFO_BYTES))
    frames = st.one_of(st.binary(max_size=64), _byte_mutations(good),
                       st.tuples(st.integers(0, 255), st.binary(max_size=40)).map(
                           lambda t: proto.reply(*t)))
    return st.tuples(st.sampled_from(["info", "status", "read", "marks", "write"]),
                     st.lists(frames, min_size=1, max_size=4))


class _FakeTransport:
    """Replies with the fuzzed bytes, then nothing (a silent board)."""

    def __init__(self, replies: list[bytes]) -> None:
        self.buf = b"".join(replies)

    def write(self, data: bytes) -> int:
        return len(data)

    def read(self, n: int) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def idle(self, seconds: float) -> None:
        pass

    def close(self) -> None:
        pass


def _run_host(fx: Fixture, inp: Any, work: Path) -> Callable[[], Any]:
    from shiftbook.sw.host import Board

    what, replies = inp
    board = Board(_FakeTransport(replies))
    calls = {"info": board.info, "status": board.status, "read": lambda: board.read(0, 3),
             "marks": lambda: board.marks(0, 2), "write": lambda: board.write(0, bytes(16))}
    return calls[what]


def _pt2_input(fx: Fixture) -> st.SearchStrategy:
    return _byte_mutations(fx.pt2)


def _run_pt2(fx: Fixture, inp: bytes, work: Path) -> Callable[[], Any]:
    from shiftbook.sw.frontend.source import load_source

    p = work / "model.pt2"
    p.write_bytes(inp)
    return lambda: load_source(p)


@st.composite
def _onnx_edit(draw, data: bytes) -> bytes:
    """One to three structural edits of the valid model: an attribute's integers changed, an
    initializer reshaped or filled with extreme values, a node input renamed, a node dropped,
    an op type replaced, the input shape changed."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load_from_string(data)
    g = m.graph
    for _ in range(draw(st.integers(1, 3))):
        kind = draw(st.sampled_from(["attr", "init_shape", "init_value", "input", "drop",
                                     "op", "shape"]))
        if kind in ("attr", "input", "drop", "op") and not g.node:
            continue
        node = g.node[draw(st.integers(0, len(g.node) - 1))] if g.node else None
        if kind == "attr" and node.attribute:
            a = node.attribute[draw(st.integers(0, len(node.attribute) - 1))]
            vals = draw(st.lists(st.integers(-3, 2**31), min_size=0, max_size=5))
            del a.ints[:]
            a.ints.extend(vals)
            a.i = draw(st.integers(-2, 2**31))
        elif kind in ("init_shape", "init_value") and g.initializer:
            t = g.initializer[draw(st.integers(0, len(g.initializer) - 1))]
            arr = numpy_helper.to_array(t).reshape(-1)
            if kind == "init_shape":
                n = draw(st.integers(0, 2 * arr.size))
                arr = np.resize(arr, n).reshape(draw(st.sampled_from(
                    [(n,), (1, n), (n, 1, 1, 1)])))
            else:
                arr = arr.copy()
                arr[draw(st.integers(0, max(arr.size - 1, 0))) if arr.size else slice(0)] = \
                    draw(st.sampled_from([np.inf, -np.inf, np.nan, 1e38, 0.0, -1e-45]))
            t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
        elif kind == "input" and node.input:
            node.input[draw(st.integers(0, len(node.input) - 1))] = draw(
                st.sampled_from(["x", "y", "missing", "w1", "", "f"]))
        elif kind == "drop":
            del g.node[draw(st.integers(0, len(g.node) - 1))]
        elif kind == "op":
            node.op_type = draw(st.sampled_from(
                ["Sigmoid", "ConvTranspose", "Gemm", "Conv", "Add", "Quant", "Nope", ""]))
        elif kind == "shape":
            dims = g.input[0].type.tensor_type.shape.dim
            dims[draw(st.integers(0, len(dims) - 1))].dim_value = draw(st.integers(0, 4096))
    return m.SerializeToString()


def _onnx_input(fx: Fixture) -> st.SearchStrategy:
    return st.one_of(_byte_mutations(fx.onnx), _onnx_edit(fx.onnx))


def _run_onnx(fx: Fixture, inp: bytes, work: Path) -> Callable[[], Any]:
    from shiftbook.sw.frontend.source import load_source

    p = work / "model.onnx"
    p.write_bytes(inp)
    return lambda: load_source(p)


#: name -> (strategy factory, runner factory: (fixture, input, workdir) -> thunk)
TARGETS: dict[str, tuple[Callable, Callable]] = {
    "bundle": (_bundle_input, _run_bundle),
    "config": (_config_input, _run_config),
    "host": (_host_input, _run_host),
    "pt2": (_pt2_input, _run_pt2),
    "onnx": (_onnx_input, _run_onnx),
}
