"""Program bundle: the compiler's output and the only input of simulators and estimators.

A bundle is a directory (see docs/bundle.md)::

    manifest.json   format, version, CoreConfig + hash, program, memory image, tensors, layers
    memory.bin      the external memory image from byte 0 (program at word 0, then data)
    ir.json/ir.npz  the integer IR (the golden level re-runs it)
    program.txt     a human-readable listing (informational, not validated)

Writing is deterministic (same inputs -> same bytes) and atomic (a temporary directory renamed
into place). :func:`load_bundle` validates everything and raises :class:`BundleError` with one
line a user can act on.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from shiftbook import weights as wf
from shiftbook.config import ConfigError, CoreConfig
from shiftbook.fields import check_fields
from shiftbook.isa import (
    INSN_BYTES,
    WFMT_CODEBOOK,
    WFMT_RAW,
    Buf,
    Insn,
    IsaError,
    Opcode,
    Reg,
    decode_program,
)
from shiftbook.manifest import LayerMeta, Manifest, ManifestError, parse_manifest
from shiftbook.outputs import check_output_dir, publish_dir
from shiftbook.sw.compiler import CompiledProgram, Placement, unpack_tensor
from shiftbook.sw.ir import Graph, IRError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "BundleError", "Bundle", "write_bundle",
           "manifest_digest", "sign_manifest",
           "load_bundle"]

BUNDLE_FORMAT = "shiftbook-bundle"
BUNDLE_VERSION = 1
MANIFEST = "manifest.json"
MEMORY = "memory.bin"
IR_STEM = "ir"


class BundleError(ValueError):
    """A bundle that is missing, corrupted, of an unknown version or for another core."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Bundle:
    """A loaded, validated bundle: its typed manifest, core config and memory image."""

    path: Path
    manifest: Manifest
    config: CoreConfig
    memory: bytes

    @property
    def tensors(self) -> dict[str, Placement]:
        return dict(self.manifest.tensors)

    @property
    def layers(self) -> list[LayerMeta]:
        return list(self.manifest.layers)

    @property
    def program(self) -> list[Insn]:
        p = self.manifest.program
        return decode_program(self.memory[p.addr: p.addr + p.bytes])

    @property
    def ideal_cycles(self) -> int:
        return sum(lay.ideal_cycles for lay in self.manifest.layers)

    def graph(self) -> Graph:
        try:
            return Graph.load(self.path, IR_STEM)
        except (OSError, IRError, ValueError, KeyError) as e:
            raise BundleError(f"bundle {self.path}: cannot read the IR: {e}") from None

    def read_tensors(self, memory: bytes | None = None) -> dict[str, np.ndarray]:
        """Every tensor's values from ``memory`` (default: the bundle's initial image)."""
        mem = self.memory if memory is None else memory
        return {name: unpack_tensor(mem, p) for name, p in self.tensors.items()}

    def inputs(self) -> dict[str, np.ndarray]:
        tens = self.tensors
        return {n: unpack_tensor(self.memory, tens[n]) for n in self.manifest.inputs}


DIGEST_KEY = "manifest_sha256"


def manifest_digest(manifest: dict[str, Any]) -> str:
    """sha256 of every manifest field but the digest itself (canonical JSON): it covers the
    config, its hash, the program location, the tensors and the layers, so a manifest edited
    by hand (another preset's config pasted in, a layer's address changed) is refused."""
    body = {k: v for k, v in manifest.items() if k != DIGEST_KEY}
    return _sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode())


def sign_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """``manifest`` with its digest set (for tools and tests that rewrite a bundle)."""
    manifest[DIGEST_KEY] = manifest_digest(manifest)
    return manifest


def _manifest(prog: CompiledProgram, ir_files: dict[str, str]) -> dict[str, Any]:
    cfg = prog.config
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "config": cfg.to_dict(),
        "config_hash": cfg.hash,
        "program": {"addr": 0, "bytes": len(prog.program),
                    "instructions": len(prog.program) // INSN_BYTES},
        "memory": {"file": MEMORY, "bytes": len(prog.memory), "sha256": _sha256(prog.memory)},
        "ir": ir_files,
        "inputs": list(prog.inputs),
        "outputs": list(prog.outputs),
        "tensors": [p.to_dict() for p in prog.tensors.values()],
        "layers": [lay.to_dict() for lay in prog.layers],
        "ideal_cycles": prog.ideal_cycles,
    }


def write_bundle(prog: CompiledProgram, graph: Graph, path: str | Path, *,
                 force: bool = False) -> Path:
    """Write ``prog`` (and the IR it came from) as a bundle directory at ``path``.

    What is at ``path`` is replaced only if it is a bundle or empty (or with ``force``; see
    :mod:`shiftbook.outputs`).
    """
    path = check_output_dir(path, "bundle", force=force)
    parent = path.parent if str(path.parent) else Path(".")
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=parent))
    try:
        jpath, npath = graph.save(tmp, IR_STEM)
        ir_files = {"json": jpath.name, "json_sha256": _sha256(jpath.read_bytes()),
                    "npz": npath.name, "npz_sha256": _sha256(npath.read_bytes())}
        (tmp / MEMORY).write_bytes(prog.memory)
        (tmp / "program.txt").write_text(
            "".join(f"{i:6d}  {insn}\n" for i, insn in enumerate(prog.insns)))
        (tmp / MANIFEST).write_text(json.dumps(sign_manifest(_manifest(prog, ir_files)), indent=1,
                                               sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        publish_dir(tmp, path, "bundle", force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_bundle(path: str | Path, config: CoreConfig | None = None) -> Bundle:
    """Read and validate a bundle; with ``config``, refuse one built for another core."""
    path = Path(path)
    typed = _read_manifest(path)
    cfg = _manifest_config(path, typed, config)
    memory = _read_files(path, typed)
    if len(memory) > cfg.mem_words * cfg.bus_bytes:
        raise BundleError(f"bundle {path}: memory image larger than the core's address space")
    insns = _read_program(path, typed, cfg, memory)
    _check_ranges(path, typed, len(memory))
    _check_layers_fit(path, typed, cfg, insns)
    bundle = Bundle(path, typed, cfg, memory)
    _check_weight_formats(bundle, insns)
    return bundle


def _read_manifest(path: Path) -> Manifest:
    """The typed manifest of the bundle at ``path``: its format, version and digest checked,
    every field parsed."""
    if not path.is_dir():
        raise BundleError(f"bundle {path} does not exist (or is not a directory)")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"bundle {path} has no {MANIFEST}")
    try:
        man = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"bundle {path}: {MANIFEST} is corrupted ({e})") from None
    if not isinstance(man, dict) or man.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"bundle {path}: {MANIFEST} is not a {BUNDLE_FORMAT} manifest")
    if man.get("version") != BUNDLE_VERSION:
        raise BundleError(f"bundle {path}: unknown bundle version {man.get('version')!r} "
                          f"(this shiftbook reads version {BUNDLE_VERSION})")
    if DIGEST_KEY not in man:
        raise BundleError(f"bundle {path} was written by an older shiftbook ({MANIFEST} has no "
                          f"{DIGEST_KEY}); recompile it")
    if man.get(DIGEST_KEY) != manifest_digest(man):
        raise BundleError(f"bundle {path}: {MANIFEST} does not match its digest "
                          f"({DIGEST_KEY}): it was edited or corrupted; recompile the bundle")
    try:
        return parse_manifest(man)
    except ManifestError as e:
        raise BundleError(f"bundle {path}: {MANIFEST}: {e}") from None


def _manifest_config(path: Path, typed: Manifest, config: CoreConfig | None) -> CoreConfig:
    try:
        cfg = CoreConfig.from_dict(typed.config)
    except ConfigError as e:
        raise BundleError(f"bundle {path}: invalid config: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError(f"bundle {path}: invalid config ({e})") from None
    if cfg.hash != typed.config_hash:
        raise BundleError(f"bundle {path}: config hash {typed.config_hash} does not match its "
                          f"config ({cfg.hash}); the manifest was edited or corrupted")
    if config is not None and config.hash != cfg.hash:
        raise BundleError(f"bundle {path} was compiled for core config {cfg.name!r} (hash "
                          f"{cfg.hash}), not for {config.name!r} (hash {config.hash}); "
                          f"recompile it for this core")
    return cfg


def _read_files(path: Path, typed: Manifest) -> bytes:
    """The memory image, after checking it and the IR files against their digests."""
    mem_info = typed.memory
    files = [(mem_info.file, mem_info.sha256), (typed.ir.json, typed.ir.json_sha256),
             (typed.ir.npz, typed.ir.npz_sha256)]
    blobs = {}
    for name, sha in files:
        fp = path / name
        if Path(name).name != name or not fp.is_file():
            raise BundleError(f"bundle {path}: missing file {name}")
        data = fp.read_bytes()
        if _sha256(data) != sha:
            raise BundleError(f"bundle {path}: {name} is corrupted (sha256 mismatch)")
        blobs[name] = data
    memory = blobs[mem_info.file]
    if len(memory) != mem_info.bytes:
        raise BundleError(f"bundle {path}: {mem_info.file} has {len(memory)} bytes, the "
                          f"manifest says {mem_info.bytes}")
    return memory


def _read_program(path: Path, typed: Manifest, cfg: CoreConfig, memory: bytes) -> list[Insn]:
    """The decoded program, ending in END, every field within the config's widths."""
    prog_info = typed.program
    if prog_info.addr != 0 or prog_info.bytes % INSN_BYTES or prog_info.bytes > len(memory) \
            or prog_info.instructions != prog_info.bytes // INSN_BYTES:
        raise BundleError(f"bundle {path}: bad program location {prog_info}")
    try:
        insns = decode_program(memory[: prog_info.bytes])
    except IsaError as e:
        raise BundleError(f"bundle {path}: the program does not decode ({e})") from None
    if not insns or insns[-1].op != Opcode.END:
        raise BundleError(f"bundle {path}: the program has no END instruction")
    unfit = check_fields(insns, cfg)
    if unfit is not None:
        raise BundleError(f"bundle {path}: the program does not fit its config "
                          f"{cfg.name!r}: {unfit}")
    return insns


def _check_layers_fit(path: Path, typed: Manifest, cfg: CoreConfig, insns: list[Insn]) -> None:
    """The layers are the program's: one MARK per layer, in order, and every layer tiled for
    this config's array and every tensor laid out for its bus (a manifest that declares another
    core than the one its program was compiled for is refused)."""
    marks = [insn.args["id"] for insn in insns if insn.op == Opcode.MARK]
    want = [lay.index for lay in typed.layers]
    if marks != want:
        raise BundleError(f"bundle {path}: the program's MARKs {_brief(marks)} do not match "
                          f"the manifest's {len(want)} layer(s) {_brief(want)}")
    for lay in typed.layers:
        if (lay.tiles.rows, lay.tiles.cols) != (cfg.rows, cfg.cols):
            raise BundleError(f"bundle {path}: layer {lay.index} ({lay.name!r}) was tiled for a "
                              f"{lay.tiles.rows}x{lay.tiles.cols} array, its config "
                              f"{cfg.name!r} has {cfg.rows}x{cfg.cols}; recompile the bundle")
    for p in typed.tensors.values():
        if p.addr % cfg.bus_bytes or p.pitch % cfg.bus_bytes:
            raise BundleError(f"bundle {path}: tensor {p.name!r} (address {p.addr}, pitch "
                              f"{p.pitch}) is not laid out for the {cfg.bus_bytes}-byte bus "
                              f"of config {cfg.name!r}; recompile the bundle")


def _brief(v: list[int]) -> str:
    return str(v) if len(v) <= 6 else f"[{v[0]}, {v[1]}, ..., {v[-1]}] ({len(v)})"


def _check_ranges(path: Path, typed: Manifest, size: int) -> None:
    """Every tensor and every layer's weights and biases lie inside the memory image."""
    for p in typed.tensors.values():
        if p.addr + p.nbytes > size:
            raise BundleError(f"bundle {path}: tensor {p.name!r} [{p.addr}, "
                              f"{p.addr + p.nbytes}) lies beyond the memory image "
                              f"({size} bytes)")
    for lay in typed.layers:
        for what, addr, n in (("weights", lay.weight_addr, lay.weight_bytes),
                              ("biases", lay.bias_addr, lay.bias_bytes)):
            if addr + n > size:
                raise BundleError(f"bundle {path}: layer {lay.index} ({lay.name!r}): its "
                                  f"{what} [{addr}, {addr + n}) lie beyond the memory image "
                                  f"({size} bytes)")


def _layer_codebook(bundle: Bundle, lay: LayerMeta) -> wf.CodebookWeights:
    """Rebuild a codebook layer's weights from the memory image (its index rows per group and
    chunk, its codebook) and the manifest's declared ``k``/``d`` (validated)."""
    cfg, mem = bundle.config, bundle.memory
    w = lay.weights
    for key in ("k", "d", "index_bits", "codebook_addr", "idx_per_row"):
        if getattr(w, key) is None:
            raise wf.WeightFormatError(f"codebook field {key!r} is missing")
    k, d, ib, per, ca = w.k, w.d, w.index_bits, w.idx_per_row, w.codebook_addr
    assert k is not None and d is not None and ib is not None and per is not None \
        and ca is not None
    if ib != wf.index_bits(k):
        raise wf.WeightFormatError(f"index_bits={ib} does not match k={k} "
                                   f"(needs {wf.index_bits(k)})")
    if w.codebook_bytes != k * d:
        raise wf.WeightFormatError(f"a codebook of {w.codebook_bytes} bytes does not match "
                                   f"k*d = {k}*{d} = {k * d} codes")
    if ca + k * d > len(mem):
        raise wf.WeightFormatError(f"codebook [{ca}, {ca + k * d}) lies beyond the memory image")
    shape = (lay.out_channels, lay.in_channels, *lay.kernel)
    o, c, kh, kw = shape
    kk = kh * kw
    nblocks = -(-(c * kk) // d)
    if per < 1:
        raise wf.WeightFormatError(f"idx_per_row={per} must be >= 1")
    cols, wrow = cfg.cols, cfg.wbuf_row_bytes
    idx = np.zeros((lay.tiles.groups * cols, nblocks), np.int64)
    row = 0
    base = lay.weight_addr
    for g in range(lay.tiles.groups):
        for c0, c1, _, _ in lay.tiles.chunks:
            b0, b1 = c0 * kk // d, -(-(c1 * kk) // d)
            nrows = -(-(b1 - b0) // per)
            blob = mem[base + row * wrow: base + (row + nrows) * wrow]
            if len(blob) < nrows * wrow:
                raise wf.WeightFormatError("index rows lie beyond the memory image")
            idx[g * cols:(g + 1) * cols, b0:b1] = wf.unpack_index_rows(blob, ib, cols, wrow,
                                                                        b1 - b0)
            row += nrows
    if row * wrow != lay.weight_bytes:
        raise wf.WeightFormatError(f"{row * wrow} bytes of index rows, the manifest says "
                                   f"{lay.weight_bytes}")
    pad = idx[o:]
    if pad.size and int(pad.max()) >= k:
        raise wf.WeightFormatError(f"an unused column's index {int(pad.max())} is past the "
                                   f"codebook (k={k})")
    cb = np.frombuffer(mem[ca: ca + k * d], np.uint8).astype(np.int64).reshape(k, d)
    fmt = wf.CodebookWeights(shape, k, d, cfg.exp_bits, cb, idx[:o])
    fmt.check_config(cfg.max_k, cfg.max_d, cfg.exp_bits)
    return fmt


def _check_weight_formats(bundle: Bundle, insns: list[Insn]) -> None:
    """Refuse codebook layers whose indices point past the codebook, or whose codebook (in
    memory, in the program's CB_K/CB_D and LOAD CB, in the IR) does not match the declared
    ``k`` and ``d``."""
    path = bundle.path
    cb_layers = [lay for lay in bundle.layers if lay.weights.wfmt != WFMT_RAW]
    if not cb_layers:
        return
    # The program's view: the CB_K/CB_D of each LOAD CB, per layer (MARK id closes a layer).
    loads: dict[int, list[tuple[int, int, Insn]]] = {}
    regs: dict[int, int] = {}
    layer = 0
    for insn in insns:
        if insn.op == Opcode.SET:
            regs[insn.args["reg"]] = insn.args["value"]
        elif insn.op == Opcode.LOAD and insn.args["buf"] == Buf.CB:
            loads.setdefault(layer, []).append((regs.get(Reg.CB_K, 0), regs.get(Reg.CB_D, 0),
                                                insn))
        elif insn.op == Opcode.MARK:
            layer = insn.args["id"] + 1
    graph = bundle.graph()
    ops = {op.name: op for op in graph.ops}
    B = bundle.config.bus_bytes
    for lay in cb_layers:
        name = lay.name
        where = f"bundle {path}: layer {name!r}"
        if lay.weights.wfmt != WFMT_CODEBOOK:
            raise BundleError(f"{where}: unknown weight format {lay.weights.wfmt!r}")
        try:
            fmt = _layer_codebook(bundle, lay)
        except (wf.WeightFormatError, KeyError, TypeError, ValueError) as e:
            raise BundleError(f"{where}: {e}") from None
        for k, d, insn in loads.get(lay.index, []) or [(None, None, None)]:
            if insn is None:
                raise BundleError(f"{where}: the program loads no codebook for it")
            if (k, d) != (fmt.k, fmt.d):
                raise BundleError(f"{where}: the program's codebook is k={k}, d={d}, the "
                                  f"manifest declares k={fmt.k}, d={fmt.d}")
            if insn.args["ext_addr"] * B != lay.weights.codebook_addr \
                    or insn.args["words"] * B < fmt.k * fmt.d:
                raise BundleError(f"{where}: the program's LOAD CB does not read the declared "
                                  f"codebook of {fmt.k * fmt.d} bytes")
        op = ops.get(name)
        ir_fmt = getattr(op, "weight_format", None)
        if ir_fmt is None:
            raise BundleError(f"{where}: the IR has no codebook format for it")
        if (ir_fmt.k, ir_fmt.d) != (fmt.k, fmt.d) \
                or not np.array_equal(ir_fmt.codebook, fmt.codebook) \
                or not np.array_equal(ir_fmt.indices, fmt.indices):
            raise BundleError(f"{where}: the memory image's codebook or indices differ from "
                              f"the IR's (k={ir_fmt.k}, d={ir_fmt.d})")
