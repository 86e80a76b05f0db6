"""The bundle manifest as typed records: what the compiler writes and every reader reads.

``manifest.json`` (docs/bundle.md) is JSON; this module is its schema. :func:`parse_manifest`
turns the decoded JSON into a :class:`Manifest` (tensor placements, per-layer
:class:`LayerMeta` with its :class:`TileMeta` and :class:`WeightMeta`, the program and memory
locations), checking every field's presence and type: a missing, misspelt or mistyped field is
a :class:`ManifestError` naming the field and the layer, never a ``KeyError`` deep in a
simulator. ``to_dict`` gives back exactly the JSON the compiler writes, so a manifest survives
a parse/write round trip byte for byte (its digest too).

Kernel module: no torch, no Amaranth (``sw/bundle.py`` does the files, digests and checks
against the memory image and the IR).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from shiftbook.placement import Placement

__all__ = ["ManifestError", "TileMeta", "WeightMeta", "LayerMeta", "ProgramInfo", "MemoryInfo",
           "IrFiles", "Manifest", "parse_manifest", "parse_layer", "parse_placement"]


class ManifestError(ValueError):
    """A manifest field that is missing, of the wrong type or out of range (one line)."""


# ------------------------------------------------------------------ field readers
def _get(d: Mapping[str, Any], key: str, where: str) -> Any:
    if not isinstance(d, Mapping):
        raise ManifestError(f"{where} is {type(d).__name__}, not an object")
    if key not in d:
        raise ManifestError(f"{where} lacks field {key!r}")
    return d[key]


def _int(v: Any, key: str, where: str, *, lo: int | None = 0, optional: bool = False) -> Any:
    if v is None and optional:
        return None
    if isinstance(v, bool) or not isinstance(v, int):
        raise ManifestError(f"{where}: field {key!r} is {v!r}, not an integer")
    if lo is not None and v < lo:
        raise ManifestError(f"{where}: field {key!r} is {v}, below {lo}")
    return v


def _terms(v: Any, where: str) -> int | None:
    t = _int(v, "terms", where, lo=1, optional=True)
    if t is not None and t > 2:
        raise ManifestError(f"{where}: field 'terms' is {t}, above 2")
    return t


def _str(v: Any, key: str, where: str, *, optional: bool = False) -> Any:
    if v is None and optional:
        return None
    if not isinstance(v, str) or not v:
        raise ManifestError(f"{where}: field {key!r} is {v!r}, not a name")
    return v


def _ints(v: Any, key: str, where: str, n: int | None = None, *, lo: int | None = 0) -> tuple:
    if not isinstance(v, list | tuple) or (n is not None and len(v) != n):
        want = f"a list of {n} integers" if n is not None else "a list of integers"
        raise ManifestError(f"{where}: field {key!r} is {v!r}, not {want}")
    return tuple(_int(x, key, where, lo=lo) for x in v)


def _list(v: Any, key: str, where: str) -> list:
    if not isinstance(v, list):
        raise ManifestError(f"{where}: field {key!r} is {type(v).__name__}, not a list")
    return v


def _check_keys(d: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(d) - allowed)
    if extra:
        raise ManifestError(f"{where} has an unknown field {extra[0]!r}")


# ------------------------------------------------------------------ records
@dataclass(frozen=True)
class TileMeta:
    """How a layer was tiled: output row bands ``(y0, y1)``, input-channel chunks
    ``(c0, c1, kh0, kh1)``, output-channel groups of ``cols``, and ``group_block`` groups per
    block of the convolution's outermost loop (None: not recorded, pooling layers and older
    bundles; one block of all groups). ``terms`` (None: one) is 2 for a two-term layer: its
    chunks come in pairs over the same channels, the first term's codes then the second's."""

    rows: int
    cols: int
    groups: int
    bands: tuple[tuple[int, int], ...]
    chunks: tuple[tuple[int, int, int, int], ...]
    out_w: int
    group_block: int | None = None
    terms: int | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str) -> TileMeta:
        w = f"{where} tiles"
        _check_keys(d if isinstance(d, Mapping) else {}, {f.name for f in fields(cls)}, w)
        return cls(
            rows=_int(_get(d, "rows", w), "rows", w, lo=1),
            cols=_int(_get(d, "cols", w), "cols", w, lo=1),
            groups=_int(_get(d, "groups", w), "groups", w, lo=1),
            bands=tuple(_ints(b, "bands", w, 2) for b in _list(_get(d, "bands", w), "bands", w)),
            chunks=tuple(_ints(c, "chunks", w, 4)
                         for c in _list(_get(d, "chunks", w), "chunks", w)),
            out_w=_int(_get(d, "out_w", w), "out_w", w, lo=1),
            group_block=_int(d.get("group_block"), "group_block", w, lo=1, optional=True),
            terms=_terms(d.get("terms"), w),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "rows": self.rows, "cols": self.cols, "groups": self.groups,
            "bands": [list(b) for b in self.bands], "chunks": [list(c) for c in self.chunks],
            "out_w": self.out_w}
        if self.group_block is not None:
            out["group_block"] = self.group_block
        if self.terms is not None:
            out["terms"] = self.terms
        return out


@dataclass(frozen=True)
class WeightMeta:
    """A layer's weight format: ``wfmt`` 0 raw shift codes, 1 codebook indices (``k``
    codewords of ``d`` codes, ``index_bits`` per index, ``idx_per_row`` index rows per WGT
    row, the codebook at ``codebook_addr``). ``footprint``: bits by kind (None for pooling)."""

    wfmt: int
    k: int | None
    d: int | None
    index_bits: int | None
    layout: str | None
    codebook_addr: int | None
    codebook_bytes: int
    footprint: dict[str, int] | None
    idx_per_row: int | None = None

    @property
    def is_codebook(self) -> bool:
        return self.wfmt != 0

    @classmethod
    def from_dict(cls, d: Any, where: str) -> WeightMeta:
        w = f"{where} weights"
        _check_keys(d if isinstance(d, Mapping) else {}, {f.name for f in fields(cls)}, w)
        fp = _get(d, "footprint", w)
        if fp is not None:
            if not isinstance(fp, Mapping):
                raise ManifestError(f"{w}: field 'footprint' is {fp!r}, not an object")
            fp = {str(k): _int(v, f"footprint.{k}", w) for k, v in fp.items()}
        return cls(
            wfmt=_int(_get(d, "wfmt", w), "wfmt", w),
            k=_int(_get(d, "k", w), "k", w, lo=1, optional=True),
            d=_int(_get(d, "d", w), "d", w, lo=1, optional=True),
            index_bits=_int(_get(d, "index_bits", w), "index_bits", w, optional=True),
            layout=_str(_get(d, "layout", w), "layout", w, optional=True),
            codebook_addr=_int(_get(d, "codebook_addr", w), "codebook_addr", w, optional=True),
            codebook_bytes=_int(_get(d, "codebook_bytes", w), "codebook_bytes", w),
            footprint=fp,
            idx_per_row=_int(d.get("idx_per_row"), "idx_per_row", w, optional=True),
        )

    def to_dict(self) -> dict[str, Any]:
        out = {"wfmt": self.wfmt, "k": self.k, "d": self.d, "index_bits": self.index_bits,
               "layout": self.layout, "codebook_addr": self.codebook_addr,
               "codebook_bytes": self.codebook_bytes,
               "footprint": None if self.footprint is None else dict(self.footprint)}
        if self.idx_per_row is not None:
            out["idx_per_row"] = self.idx_per_row
        return out


# Optional layer fields: written only when set (pooling layers: mode, shift; a layer the
# compiler adapted to fit the config: adaptation).
_OPTIONAL = ("mode", "shift", "adaptation")


@dataclass(frozen=True)
class LayerMeta:
    """One layer of a compiled program (docs/bundle.md, "layers")."""

    index: int
    name: str
    op: str
    input: str
    output: str
    residual: str | None
    out_channels: int
    in_channels: int
    macs: int
    ideal_cycles: int
    weight_bytes: int
    weight_addr: int
    bias_addr: int
    bias_bytes: int
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int, int, int]
    tiles: TileMeta
    weights: WeightMeta
    computes: int
    weight_bytes_read: int
    codebook_bytes_read: int
    mode: str | None = None
    shift: int | None = None
    adaptation: dict[str, Any] | None = field(default=None, compare=False)

    @property
    def is_pool(self) -> bool:
        return self.mode is not None

    @classmethod
    def from_dict(cls, d: Any, where: str = "layer") -> LayerMeta:
        if not isinstance(d, Mapping):
            raise ManifestError(f"{where} is {type(d).__name__}, not an object")
        name = d.get("name")
        w = f"{where} ({name!r})" if isinstance(name, str) else where
        _check_keys(d, {f.name for f in fields(cls)}, w)

        def i(key: str, lo: int | None = 0) -> int:
            return _int(_get(d, key, w), key, w, lo=lo)

        adapt = d.get("adaptation")
        if adapt is not None and not isinstance(adapt, Mapping):
            raise ManifestError(f"{w}: field 'adaptation' is {adapt!r}, not an object")
        return cls(
            index=i("index"), name=_str(_get(d, "name", w), "name", w),
            op=_str(_get(d, "op", w), "op", w),
            input=_str(_get(d, "input", w), "input", w),
            output=_str(_get(d, "output", w), "output", w),
            residual=_str(_get(d, "residual", w), "residual", w, optional=True),
            out_channels=i("out_channels", 1), in_channels=i("in_channels", 1),
            macs=i("macs"), ideal_cycles=i("ideal_cycles"), weight_bytes=i("weight_bytes"),
            weight_addr=i("weight_addr"), bias_addr=i("bias_addr"), bias_bytes=i("bias_bytes"),
            kernel=_ints(_get(d, "kernel", w), "kernel", w, 2),  # type: ignore[arg-type]
            stride=_ints(_get(d, "stride", w), "stride", w, 2),  # type: ignore[arg-type]
            padding=_ints(_get(d, "padding", w), "padding", w, 4),  # type: ignore[arg-type]
            tiles=TileMeta.from_dict(_get(d, "tiles", w), w),
            weights=WeightMeta.from_dict(_get(d, "weights", w), w),
            computes=i("computes"), weight_bytes_read=i("weight_bytes_read"),
            codebook_bytes_read=i("codebook_bytes_read"),
            mode=_str(d.get("mode"), "mode", w, optional=True),
            shift=_int(d.get("shift"), "shift", w, optional=True),
            adaptation=None if adapt is None else dict(adapt),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in _OPTIONAL and v is None:
                continue
            if isinstance(v, TileMeta | WeightMeta):
                v = v.to_dict()
            elif isinstance(v, tuple):
                v = list(v)
            elif isinstance(v, dict):
                v = dict(v)
            out[f.name] = v
        return out


def parse_layer(d: Any, where: str = "layer") -> LayerMeta:
    return LayerMeta.from_dict(d, where)


def parse_placement(d: Any, where: str = "tensor") -> Placement:
    """A tensor placement from its manifest entry, every field checked."""
    if not isinstance(d, Mapping):
        raise ManifestError(f"{where} is {type(d).__name__}, not an object")
    name = d.get("name")
    w = f"{where} ({name!r})" if isinstance(name, str) else where
    _check_keys(d, {"name", "shape", "addr", "pitch", "plane", "frac", "bytes"}, w)
    shape = _ints(_get(d, "shape", w), "shape", w, 3, lo=1)
    p = Placement(_str(_get(d, "name", w), "name", w), shape,  # type: ignore[arg-type]
                  _int(_get(d, "addr", w), "addr", w), _int(_get(d, "pitch", w), "pitch", w),
                  _int(_get(d, "plane", w), "plane", w),
                  _int(d.get("frac", 0), "frac", w, lo=None))
    if p.pitch < shape[2] or p.plane < shape[1] * p.pitch:
        raise ManifestError(f"{w}: pitch {p.pitch} / plane {p.plane} cannot hold a "
                            f"{shape[1]}x{shape[2]} plane")
    if "bytes" in d and d["bytes"] != p.nbytes:
        raise ManifestError(f"{w}: field 'bytes' is {d['bytes']!r}, the placement holds "
                            f"{p.nbytes}")
    return p


@dataclass(frozen=True)
class ProgramInfo:
    addr: int
    bytes: int
    instructions: int


@dataclass(frozen=True)
class MemoryInfo:
    file: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class IrFiles:
    json: str
    json_sha256: str
    npz: str
    npz_sha256: str


@dataclass(frozen=True)
class Manifest:
    """Everything ``manifest.json`` holds, typed (the config stays its JSON object: the
    bundle loader turns it into a CoreConfig and checks its hash)."""

    format: str
    version: int
    config: dict[str, Any]
    config_hash: str
    program: ProgramInfo
    memory: MemoryInfo
    ir: IrFiles
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    tensors: dict[str, Placement]
    layers: tuple[LayerMeta, ...]
    ideal_cycles: int
    digest: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "version": self.version, "config": dict(self.config),
            "config_hash": self.config_hash,
            "program": {"addr": self.program.addr, "bytes": self.program.bytes,
                        "instructions": self.program.instructions},
            "memory": {"file": self.memory.file, "bytes": self.memory.bytes,
                       "sha256": self.memory.sha256},
            "ir": {"json": self.ir.json, "json_sha256": self.ir.json_sha256,
                   "npz": self.ir.npz, "npz_sha256": self.ir.npz_sha256},
            "inputs": list(self.inputs), "outputs": list(self.outputs),
            "tensors": [p.to_dict() for p in self.tensors.values()],
            "layers": [lay.to_dict() for lay in self.layers],
            "ideal_cycles": self.ideal_cycles,
            "manifest_sha256": self.digest,
        }


def _record(cls: type, d: Any, where: str, strs: tuple[str, ...] = ()) -> Any:
    names = [f.name for f in fields(cls)]
    if not isinstance(d, Mapping):
        raise ManifestError(f"{where} is {d!r}, not an object")
    _check_keys(d, set(names), where)
    return cls(**{n: (_str(_get(d, n, where), n, where) if n in strs
                      else _int(_get(d, n, where), n, where)) for n in names})


def parse_manifest(m: Any) -> Manifest:
    """The typed manifest of decoded ``manifest.json`` content (every field checked)."""
    if not isinstance(m, Mapping):
        raise ManifestError("the manifest is not a JSON object")
    allowed = {"format", "version", "config", "config_hash", "program", "memory", "ir",
               "inputs", "outputs", "tensors", "layers", "ideal_cycles", "manifest_sha256"}
    where = "top level"
    _check_keys(m, allowed, where)
    cfg = _get(m, "config", where)
    if not isinstance(cfg, Mapping):
        raise ManifestError(f"the manifest's config is {cfg!r}, not an object")
    tensors: dict[str, Placement] = {}
    for j, t in enumerate(_list(_get(m, "tensors", where), "tensors", where)):
        p = parse_placement(t, f"tensor {j}")
        if p.name in tensors:
            raise ManifestError(f"tensor {j}: a second tensor named {p.name!r}")
        tensors[p.name] = p
    layers = tuple(parse_layer(lay, f"layer {j}")
                   for j, lay in enumerate(_list(_get(m, "layers", where), "layers", where)))
    for j, lay in enumerate(layers):
        if lay.index != j:
            raise ManifestError(f"layer {j} ({lay.name!r}) has index {lay.index}")
        for role in ("input", "output", "residual"):
            t = getattr(lay, role)
            if t is not None and t not in tensors:
                raise ManifestError(f"layer {j} ({lay.name!r}): its {role} {t!r} is not a "
                                    f"tensor of the manifest")
    ios = {}
    for role in ("inputs", "outputs"):
        names = tuple(_str(n, role, where) for n in _list(_get(m, role, where), role, where))
        if not names:
            raise ManifestError(f"the manifest lists no {role}")
        for n in names:
            if n not in tensors:
                raise ManifestError(f"the manifest's {role[:-1]} {n!r} is not one of its "
                                    f"tensors")
        ios[role] = names
    return Manifest(
        format=_str(_get(m, "format", where), "format", where),
        version=_int(_get(m, "version", where), "version", where),
        config=dict(cfg),
        config_hash=_str(_get(m, "config_hash", where), "config_hash", where),
        program=_record(ProgramInfo, _get(m, "program", where), "the manifest's program"),
        memory=_record(MemoryInfo, _get(m, "memory", where), "the manifest's memory",
                       ("file", "sha256")),
        ir=_record(IrFiles, _get(m, "ir", where), "the manifest's ir",
                   ("json", "json_sha256", "npz", "npz_sha256")),
        inputs=ios["inputs"], outputs=ios["outputs"], tensors=tensors, layers=layers,
        ideal_cycles=_int(_get(m, "ideal_cycles", where), "ideal_cycles", where),
        digest=_str(_get(m, "manifest_sha256", where), "manifest_sha256", where),
    )
