"""Helpers of the tracer on single ``torch.fx`` nodes: where a node comes from (for error
messages), its module path, 2-D arguments, and the values the tracer binds to nodes
(:class:`Act`, an activation tensor; :class:`TupleValue`, a tuple-returning op's result)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import torch

from .errors import FrontendError
from .float_net import FLayer

__all__ = ["Act", "TupleValue", "where", "module_path", "pair"]


def where(node: torch.fx.Node) -> str:
    """``node 'NAME' in module 'PATH' (Type) at file.py:LINE`` for error messages."""
    stack = node.meta.get("nn_module_stack") or {}
    if stack:
        path, typ = list(stack.values())[-1]
        typ = str(getattr(typ, "__name__", typ)).rsplit(".", 1)[-1].strip("'>")
        mod = f"module '{path}' ({typ})" if path else f"the top-level module ({typ})"
    else:
        mod = "the model"
    where = f"node '{node.name}' in {mod}"
    trace = node.meta.get("stack_trace") or ""
    frames = [f for f in re.findall(r'File "([^"]+)", line (\d+)', trace)
              if "/torch/" not in f[0]]
    if frames:
        file, line = frames[-1]
        where += f" at {file.rsplit('/', 1)[-1]}:{line}"
    return where


def module_path(node: torch.fx.Node) -> str:
    """The dotted path of the module that made ``node`` ('' at the top level)."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def pair(v: Any, what: str, node: torch.fx.Node) -> tuple[int, int]:
    """A 2-D argument (an int or a 1- or 2-element list) as ``(a, b)``."""
    if isinstance(v, int):
        return v, v
    v = list(v)
    if len(v) == 1:
        return int(v[0]), int(v[0])
    if len(v) == 2:
        return int(v[0]), int(v[1])
    raise FrontendError(f"{node.target}: {what} {v} is not 2-D at {where(node)}")


@dataclass
class Act:
    """An activation value: the IR tensor holding it, its ``(C, H, W)``, its producer layer,
    a pending scale (real = scale * tensor, from an average pool) and whether it is flat."""

    tensor: str
    shape: tuple[int, int, int]
    layer: FLayer | None
    scale: float = 1.0
    flat: bool = False


@dataclass
class TupleValue:
    """The result of an op returning a tuple (``getitem`` picks an item; ``None``: unused)."""

    items: list[Any]
