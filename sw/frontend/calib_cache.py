"""An optional on-disk cache of the quantizer's result (``shiftbook compile --calib-cache DIR``).

Post-training quantization (calibration, GPTQ rounding, bias correction, output scales) is
most of a compile; its result depends only on the float network, the calibration images, the
core's numeric parameters and the quantizer's own code. An entry is keyed by a BLAKE2b digest
of all of them:

- every layer of the traced :class:`FloatNet` (kind, names, shapes, stride, padding, ReLU,
  residual, float weights and biases, bytes exactly);
- the calibration images (float64 bytes and shape);
- the :class:`CoreConfig` without its name (any change of a field misses);
- the quantizer's options and the source text of the modules it runs (``sw/frontend``, the
  IR, the golden reference, numerics and weight formats), so an edited quantizer never reuses
  an entry.

An entry holds the integer IR (``ir.json`` + ``ir.npz``, as ``Graph.save`` writes them) and the
per-layer reports and notes (``meta.json``); it is written into a temporary directory and
renamed into place, so a reader sees a whole entry or none. A network with kept codes
(``FLayer.fixed``: compressed checkpoints, detected shift codes) is not cached (its quantization
is short and its formats are not plain arrays). An entry that cannot be read is recomputed and
replaced, and the caller is told why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from shiftbook.config import CoreConfig
from shiftbook.sw.ir import Graph

from .float_net import FloatNet
from .lowered import Lowered

__all__ = ["CACHE_VERSION", "cache_key", "load_entry", "store_entry", "uncacheable"]

CACHE_VERSION = "shiftbook-calib-cache-1"


def _code_digest() -> bytes:
    """The source text of the modules the quantizer runs (wherever they are installed)."""
    import shiftbook
    import shiftbook.sw

    frontend, sw, pkg = (Path(__file__).resolve().parent, Path(shiftbook.sw.__file__).parent,
                         Path(shiftbook.__file__).parent)
    paths = [*sorted(frontend.glob("*.py")), *sorted(sw.glob("ir*.py")), sw / "reference.py",
             pkg / "numerics.py", pkg / "weights.py", pkg / "config.py"]
    h = hashlib.blake2b(digest_size=16)
    for path in paths:
        h.update(path.name.encode() + b"\0")
        h.update(path.read_bytes())
    return h.digest()


def uncacheable(net: FloatNet) -> str | None:
    """Why ``net``'s quantization is not cached (None: it is)."""
    kept = [lay.name for lay in net.layers if lay.fixed is not None]
    if kept:
        return f"layer {kept[0]!r} keeps its codes"
    return None


def cache_key(net: FloatNet, images: Any, cfg: CoreConfig, options: dict[str, Any]) -> str:
    """The entry name (hex) for quantizing ``net`` on ``images`` for ``cfg`` with
    ``options`` (the quantizer's keyword arguments)."""
    h = hashlib.blake2b(digest_size=20)

    def put(obj: Any) -> None:
        if isinstance(obj, np.ndarray):
            a = np.ascontiguousarray(obj)
            h.update(f"array{a.dtype.str}{a.shape}".encode())
            h.update(a.tobytes())
        else:
            h.update(json.dumps(obj, sort_keys=True, default=str).encode() + b"\0")

    put(CACHE_VERSION)
    h.update(_code_digest())
    put({k: v for k, v in cfg.to_dict().items() if k != "name"})
    put(options)
    put([net.input, list(net.input_shape), list(net.outputs)])
    for lay in net.layers:
        fields = {f.name: getattr(lay, f.name) for f in dataclasses.fields(lay)}
        for name in ("weight", "bias"):
            arr = fields.pop(name)
            put(name)
            put(np.zeros(0) if arr is None else np.asarray(arr, dtype=np.float64))
        fields.pop("fixed")
        put(fields)
    put(np.asarray(images, dtype=np.float64))
    return h.hexdigest()


def load_entry(directory: str | Path, key: str, net: FloatNet,
               cfg: CoreConfig) -> tuple[Lowered | None, str]:
    """The cached result (or None) and a one-line status: ``hit``, ``miss`` or why an
    existing entry was not usable."""
    entry = Path(directory) / key
    if not entry.is_dir():
        return None, "miss"
    try:
        meta = json.loads((entry / "meta.json").read_text())
        if meta.get("version") != CACHE_VERSION:
            return None, f"entry {entry} has version {meta.get('version')!r}; recomputed"
        graph = Graph.load(entry)
        names = [op.name for op in graph.ops]
        if len(meta["layers"]) != len(names):
            raise ValueError(f"{len(meta['layers'])} layer reports for {len(names)} ops")
        return Lowered(graph, net, cfg, {}, list(meta["layers"]), list(meta["notes"])), "hit"
    except Exception as e:  # noqa: BLE001 - any damage to an entry: recompute it
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        return None, f"entry {entry} unreadable ({first}); recomputed"


def store_entry(directory: str | Path, key: str, low: Lowered) -> None:
    """Write ``low`` as entry ``key`` (whole or not at all; an existing entry is replaced)."""
    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}.", dir=root))
    try:
        low.graph.save(tmp)
        (tmp / "meta.json").write_text(json.dumps(
            {"version": CACHE_VERSION, "layers": low.layers, "notes": low.notes},
            default=_jsonable) + "\n")
        dest = root / key
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    raise TypeError(f"{type(obj).__name__} in a layer report")
