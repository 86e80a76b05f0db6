"""The architecture's import graph (docs/architecture.md, "Import rules"), enforced.

Every .py file of shiftbook/, hw/, sw/, sim/, boards/ and bench/ is parsed with ``ast``; every
import (module level or inside a function, relative ones resolved) is checked against the rules:

- kernel (``shiftbook/*.py`` except cli.py, demo.py, __main__.py): numpy and stdlib only; no
  torch, no amaranth, none of shiftbook.hw / .sw / .sim / .boards / .commands / .cli;
- hw/: the kernel, amaranth, numpy, stdlib only; never torch, shiftbook.sw / .sim / .boards /
  .commands / .cli / .demo;
- sw/: the kernel and sw; never amaranth, shiftbook.hw / .sim / .boards / .commands / .cli /
  .demo;
- nothing but shiftbook/cli.py (and the command modules themselves) imports
  shiftbook.commands, bench/ included; ``ALLOWED`` lists the known exceptions;
- inside sw/: compression (``sw/compress``) uses the frontend (BN folding traces the model),
  so the frontend, the IR, the reference, the compiler and the models never import
  ``shiftbook.sw.compress`` (the compressed model and its checkpoint format live in
  ``sw/models``, below both);
- ``shiftbook.flow`` (the library API, which calls sw, sim, boards and hw) is the top layer
  under the CLI: the kernel, hw/, sw/, sim/ and boards/ never import it (commands, the demo,
  bench/ and users do).

A violation is reported as ``file:line imports X (rule)``.
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# folder on disk -> dotted package it maps to (pyproject.toml package-dir)
FOLDERS = {"shiftbook": "shiftbook", "hw": "shiftbook.hw", "sw": "shiftbook.sw",
           "sim": "shiftbook.sim", "boards": "shiftbook.boards", "bench": None}

KERNEL_EXCLUDED = {"cli", "demo", "__main__", "flow"}

# sw/ parts that compression builds on: they never import shiftbook.sw.compress.
SW_BELOW_COMPRESS = {"frontend", "models", "compiler", "ir.py", "ir_base.py", "ir_conv.py",
                     "ir_pool.py", "reference.py", "bundle.py", "data.py"}

# Known violations that cannot be fixed from the files this change may touch; each one is
# (file relative to the repository root, imported module) and says why. Keep this list short:
# an entry that no longer occurs fails the test, so a fixed violation must be removed here.
ALLOWED: dict[tuple[str, str], str] = {}


def _module_name(rel: Path) -> tuple[str | None, bool]:
    """(dotted module name, is a package __init__) of a file relative to ROOT."""
    top = FOLDERS[rel.parts[0]]
    if top is None:
        return None, False
    parts = list(rel.with_suffix("").parts[1:])
    is_pkg = bool(parts) and parts[-1] == "__init__"
    if is_pkg:
        parts = parts[:-1]
    return ".".join([top, *parts]), is_pkg


def _imports(source: str, module: str | None, is_pkg: bool) -> Iterator[tuple[int, str]]:
    """(line, absolute dotted name) of every import in ``source``. For ``from X import a``
    both ``X`` and ``X.a`` are yielded (``a`` may be a submodule)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                if module is None:
                    raise ValueError(f"relative import outside a package at line {node.lineno}")
                pkg = module.split(".") if is_pkg else module.split(".")[:-1]
                drop = node.level - 1
                if drop > len(pkg) - 1:
                    raise ValueError(f"relative import beyond the top package at line "
                                     f"{node.lineno}")
                base = ".".join(pkg[:len(pkg) - drop])
                name = f"{base}.{node.module}" if node.module else base
            else:
                name = node.module or ""
            yield node.lineno, name
            for alias in node.names:
                if alias.name != "*":
                    yield node.lineno, f"{name}.{alias.name}"
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
              and node.func.attr == "import_module" and node.args
              and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)):
            # importlib.import_module("literal")
            yield node.lineno, node.args[0].value


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _kind(rel: Path) -> str:
    top = rel.parts[0]
    if top == "sw" and len(rel.parts) > 1 and rel.parts[1] in SW_BELOW_COMPRESS:
        return "sw-below-compress"
    if top == "shiftbook":
        if len(rel.parts) == 2 and rel.stem not in KERNEL_EXCLUDED:
            return "kernel"
        if len(rel.parts) == 2 and rel.stem == "cli":
            return "cli"
        return "shiftbook-other"  # commands/, demo.py, __main__.py
    return top  # hw, sw, sim, boards, bench


_FORBIDDEN = {
    "kernel": ["torch", "amaranth", "shiftbook.hw", "shiftbook.sw", "shiftbook.sim",
               "shiftbook.boards", "shiftbook.commands", "shiftbook.cli", "shiftbook.demo",
               "shiftbook.__main__", "shiftbook.flow"],
    "hw": ["torch", "shiftbook.sw", "shiftbook.sim", "shiftbook.boards", "shiftbook.commands",
           "shiftbook.cli", "shiftbook.demo", "shiftbook.__main__", "shiftbook.flow"],
    "sw": ["amaranth", "shiftbook.hw", "shiftbook.sim", "shiftbook.boards",
           "shiftbook.commands", "shiftbook.cli", "shiftbook.demo", "shiftbook.__main__",
           "shiftbook.flow"],
    "sim": ["shiftbook.flow", "shiftbook.cli", "shiftbook.demo"],
    "boards": ["shiftbook.flow", "shiftbook.cli", "shiftbook.demo"],
}

# Outside packages allowed besides the standard library.
_THIRD_PARTY = {"kernel": ("numpy",), "hw": ("amaranth", "numpy")}
_FORBIDDEN["sw-below-compress"] = [*_FORBIDDEN["sw"], "shiftbook.sw.compress"]


def check_source(source: str, rel: str | Path) -> list[tuple[int, str, str]]:
    """Violations in one file's ``source`` as (line, imported name, rule); ``rel`` is the
    file's path relative to the repository root (it decides which rules apply)."""
    rel = Path(rel)
    module, is_pkg = _module_name(rel)
    kind = _kind(rel)
    out: list[tuple[int, str, str]] = []
    seen: set[tuple[int, str]] = set()
    for line, name in _imports(source, module, is_pkg):
        rule = None
        for bad in _FORBIDDEN.get(kind, []):
            if _under(name, bad):
                rule = f"{kind} must not import {bad}"
                break
        top = name.split(".")[0]
        if rule is None and kind in _THIRD_PARTY and top != "shiftbook" \
                and top not in sys.stdlib_module_names and top not in _THIRD_PARTY[kind]:
            rule = f"{kind} imports only the kernel, {', '.join(_THIRD_PARTY[kind])} and stdlib"
        if rule is None and kind != "cli" and _under(name, "shiftbook.commands") \
                and not (module and _under(module, "shiftbook.commands")):
            rule = "only shiftbook/cli.py imports shiftbook.commands"
        if rule is None:
            continue
        # `from shiftbook.commands import x` yields both names; report the module once.
        key = (line, rule)
        if key in seen:
            continue
        seen.add(key)
        out.append((line, name, rule))
    return out


def _files() -> Iterator[Path]:
    for folder in FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            yield path.relative_to(ROOT)


def find_violations() -> list[str]:
    """Every violation in the tree as ``file:line imports X (rule)``, known exceptions
    (``ALLOWED``) left out; an exception that no longer occurs is reported too."""
    found: list[str] = []
    used: set[tuple[str, str]] = set()
    for rel in _files():
        src = (ROOT / rel).read_text(encoding="utf-8")
        for line, name, rule in check_source(src, rel):
            key = (rel.as_posix(), name)
            if key in ALLOWED:
                used.add(key)
                continue
            found.append(f"{rel.as_posix()}:{line} imports {name} ({rule})")
    for key in sorted(set(ALLOWED) - used):
        found.append(f"{key[0]}: listed exception for {key[1]} no longer occurs; remove it "
                     f"from ALLOWED in tests/test_imports.py")
    return found


def test_import_graph() -> None:
    violations = find_violations()
    for v in violations:
        print(v)
    assert not violations, "import rule violations:\n" + "\n".join(violations)


def test_files_are_found() -> None:
    rels = {p.as_posix() for p in _files()}
    for must in ("shiftbook/config.py", "hw/pe.py", "sw/bundle.py", "sim/functional.py",
                 "boards/build.py", "shiftbook/cli.py"):
        assert must in rels
    assert len(rels) > 50


def test_checker_catches_synthetic_violations() -> None:
    def names(src: str, rel: str) -> list[str]:
        return [n for _, n, _ in check_source(src, rel)]

    # kernel: torch / amaranth / subpackages, also inside a function
    assert names("import torch\n", "shiftbook/numerics.py") == ["torch"]
    assert names("def f():\n    from amaranth import Module\n", "shiftbook/isa.py")[0] \
        == "amaranth"
    assert names("from shiftbook.sw import bundle\n", "shiftbook/config.py")
    assert names("from . import commands\n", "shiftbook/timing.py") == ["shiftbook.commands"]
    assert names("from .hw import pe\n", "shiftbook/placement.py")
    assert names("import numpy\nfrom shiftbook import isa\n", "shiftbook/config.py") == []
    # the frontend and models are below compression
    assert names("from shiftbook.sw.compress import load_compressed\n",
                 "sw/frontend/source.py") == ["shiftbook.sw.compress"]
    assert names("from ..compress.core import CompressedModel\n", "sw/models/x.py")
    assert names("from shiftbook.sw.frontend import fold_batchnorm\n", "sw/compress/core.py") == []
    # the library API is the top layer: nothing below it imports it
    assert names("from shiftbook import flow\n", "sim/network.py") == ["shiftbook.flow"]
    assert names("import shiftbook.flow\n", "sw/bundle.py") == ["shiftbook.flow"]
    assert names("from shiftbook.flow import run\n", "boards/build.py")[0] == "shiftbook.flow"
    assert names("from shiftbook import flow\n", "bench/bench_energy.py") == []
    assert names("from shiftbook import flow\n", "shiftbook/commands/compile.py") == []
    # hw: no torch, no sw (relative import resolved from a module and from a package)
    assert names("import torch.nn\n", "hw/pe.py") == ["torch.nn"]
    assert names("from ..sw.bundle import load_bundle\n", "hw/core.py")[0] \
        == "shiftbook.sw.bundle"
    assert names("from ..sim import functional\n", "hw/__init__.py")[0] == "shiftbook.sim"
    assert names("from .pe import PE\nfrom shiftbook.config import CoreConfig\n"
                 "import amaranth\n", "hw/core.py") == []
    assert names("import yaml\n", "hw/pe.py") == ["yaml"]
    assert names("import scipy.signal\n", "shiftbook/timing.py") == ["scipy.signal"]
    # sw: no amaranth, no hw / sim / commands
    assert names("def f():\n    import amaranth.hdl\n", "sw/compiler/conv.py") == ["amaranth.hdl"]
    assert names("from ...sim.rtl.runner import run_image\n", "sw/estimate/report.py")[0] \
        == "shiftbook.sim.rtl.runner"
    assert names("from shiftbook.commands.estimate import x\n", "sw/estimate/report.py")
    assert names("from ..bundle import load_bundle\nimport torch\n",
                 "sw/estimate/report.py") == []
    # commands: only cli; bench, sim, demo may not; commands may import each other
    assert names("from shiftbook.commands.compile import compile_model\n",
                 "bench/bench_resnet18.py")
    assert names("import shiftbook.commands.layer\n", "sim/network.py")
    assert names("from shiftbook.commands.layer import run_layer\n", "shiftbook/demo.py")
    assert names("import importlib\nimportlib.import_module('shiftbook.commands.x')\n",
                 "boards/build.py") == ["shiftbook.commands.x"]
    assert names("from shiftbook.commands import compile\n", "shiftbook/cli.py") == []
    assert names("from shiftbook.commands import add_force_argument\n",
                 "shiftbook/commands/report.py") == []
    assert names("from . import add_force_argument\n", "shiftbook/commands/report.py") == []
    # the report format
    v = check_source("import torch\n", "shiftbook/weights.py")
    assert v == [(1, "torch", "kernel must not import torch")]
