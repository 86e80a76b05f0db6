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

from shiftbook.config import ConfigError, CoreConfig
from shiftbook.isa import INSN_BYTES, Insn, IsaError, Opcode, decode_program
from shiftbook.sw.compiler import CompiledProgram, Placement, unpack_tensor
from shiftbook.sw.ir import Graph, IRError

__all__ = ["BUNDLE_FORMAT", "BUNDLE_VERSION", "BundleError", "Bundle", "write_bundle",
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
    path: Path
    manifest: dict[str, Any]
    config: CoreConfig
    memory: bytes

    @property
    def tensors(self) -> dict[str, Placement]:
        return {t["name"]: Placement.from_dict(t) for t in self.manifest["tensors"]}

    @property
    def layers(self) -> list[dict[str, Any]]:
        return self.manifest["layers"]

    @property
    def program(self) -> list[Insn]:
        p = self.manifest["program"]
        return decode_program(self.memory[p["addr"]: p["addr"] + p["bytes"]])

    @property
    def ideal_cycles(self) -> int:
        return sum(int(lay["ideal_cycles"]) for lay in self.layers)

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
        return {n: unpack_tensor(self.memory, tens[n]) for n in self.manifest["inputs"]}


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
        "layers": prog.layers,
        "ideal_cycles": prog.ideal_cycles,
    }


def write_bundle(prog: CompiledProgram, graph: Graph, path: str | Path) -> Path:
    """Write ``prog`` (and the IR it came from) as a bundle directory at ``path``."""
    path = Path(path)
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
        (tmp / MANIFEST).write_text(json.dumps(_manifest(prog, ir_files), indent=1,
                                               sort_keys=True) + "\n")
        os.chmod(tmp, 0o755)
        old = None
        if path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old.", dir=parent))
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return path


def load_bundle(path: str | Path, config: CoreConfig | None = None) -> Bundle:
    """Read and validate a bundle; with ``config``, refuse one built for another core."""
    path = Path(path)
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
    try:
        cfg = CoreConfig.from_dict(man["config"])
        mem_info, prog_info = man["memory"], man["program"]
        for key in ("tensors", "layers", "inputs", "outputs", "ir", "config_hash"):
            if key not in man:
                raise KeyError(key)
    except ConfigError as e:
        raise BundleError(f"bundle {path}: invalid config: {e}") from None
    except (KeyError, TypeError) as e:
        raise BundleError(f"bundle {path}: {MANIFEST} lacks field {e}") from None
    if cfg.hash != man["config_hash"]:
        raise BundleError(f"bundle {path}: config hash {man['config_hash']} does not match its "
                          f"config ({cfg.hash}); the manifest was edited or corrupted")
    if config is not None and config.hash != cfg.hash:
        raise BundleError(f"bundle {path} was compiled for core config {cfg.name!r} (hash "
                          f"{cfg.hash}), not for {config.name!r} (hash {config.hash}); "
                          f"recompile it for this core")
    files = [(mem_info.get("file", MEMORY), mem_info.get("sha256")),
             (man["ir"].get("json"), man["ir"].get("json_sha256")),
             (man["ir"].get("npz"), man["ir"].get("npz_sha256"))]
    blobs = {}
    for name, sha in files:
        fp = path / str(name)
        if not name or not fp.is_file():
            raise BundleError(f"bundle {path}: missing file {name}")
        data = fp.read_bytes()
        if _sha256(data) != sha:
            raise BundleError(f"bundle {path}: {name} is corrupted (sha256 mismatch)")
        blobs[name] = data
    memory = blobs[mem_info.get("file", MEMORY)]
    if len(memory) != mem_info.get("bytes"):
        raise BundleError(f"bundle {path}: {MEMORY} has {len(memory)} bytes, the manifest "
                          f"says {mem_info.get('bytes')}")
    if len(memory) > cfg.mem_words * cfg.bus_bytes:
        raise BundleError(f"bundle {path}: memory image larger than the core's address space")
    if prog_info.get("addr") != 0 or prog_info.get("bytes", 0) % INSN_BYTES \
            or prog_info.get("bytes", 0) > len(memory):
        raise BundleError(f"bundle {path}: bad program location {prog_info}")
    try:
        insns = decode_program(memory[: prog_info["bytes"]])
    except IsaError as e:
        raise BundleError(f"bundle {path}: the program does not decode ({e})") from None
    if not insns or insns[-1].op != Opcode.END:
        raise BundleError(f"bundle {path}: the program has no END instruction")
    return Bundle(path, man, cfg, memory)
