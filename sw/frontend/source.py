"""Where a model comes from: a ``.pt2`` file, a built-in name, a checkpoint, an ``nn.Module``.

Everything ends up as a ``torch.export.ExportedProgram`` (the frontend reads aten graphs only)
plus the ``shiftbook compress`` format records whose codes must be kept.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import FrontendError

__all__ = ["ModelSource", "load_source", "export_module", "save_pt2"]


@dataclass
class ModelSource:
    """An exported program, the formats to keep (layer name -> format record), a label and,
    when known, the float ``nn.Module`` (the accuracy reference)."""

    program: torch.export.ExportedProgram
    formats: dict[str, Any] = field(default_factory=dict)
    label: str = "model"
    module: nn.Module | None = None

    @property
    def input_shape(self) -> tuple[int, int, int]:
        for spec in self.program.graph_signature.input_specs:
            if getattr(spec.kind, "name", "") == "USER_INPUT":
                for node in self.program.graph.nodes:
                    if node.op == "placeholder" and node.name == spec.arg.name:
                        shape = tuple(int(s) for s in node.meta["val"].shape)
                        if len(shape) == 4:
                            return shape[1], shape[2], shape[3]
        raise FrontendError("the exported model has no (N, C, H, W) image input")

    def float_module(self) -> nn.Module:
        """A module computing the float model (the original, or the exported graph)."""
        return self.module if self.module is not None else self.program.module()


def _default_shape(module: nn.Module) -> tuple[int, int, int]:
    from shiftbook.sw.models import ResNet

    if isinstance(module, ResNet):
        c = int(module.conv1.in_channels)
        return (c, 32, 32) if module.style == "cifar" else (c, 224, 224)
    raise FrontendError(f"give the input shape (C, H, W) for a {type(module).__name__} model")


def export_module(module: nn.Module, input_shape: tuple[int, int, int] | None = None
                  ) -> torch.export.ExportedProgram:
    """``torch.export.export`` in eval mode with a batch of one ``input_shape`` image."""
    module = module.eval()
    shape = tuple(input_shape) if input_shape is not None else _default_shape(module)
    if len(shape) != 3:
        raise FrontendError(f"input shape {shape} must be (C, H, W)")
    try:
        with torch.no_grad():
            return torch.export.export(module, (torch.zeros(1, *shape),))
    except Exception as e:  # noqa: BLE001 - any export failure is the user's model
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FrontendError(f"torch.export failed for {type(module).__name__}: {first}") from None


def save_pt2(program: torch.export.ExportedProgram, path: str | Path) -> Path:
    path = Path(path)
    torch.export.save(program, str(path))
    return path


#: ``before_export(module, input_shape, formats)``: called with a module about to be exported
#: (e.g. a check from its shapes alone: ``torch.export`` takes seconds for a ResNet-50).
BeforeExport = Callable[[nn.Module, tuple[int, int, int], dict[str, Any]], None]


def _from_module(module: nn.Module, input_shape: tuple[int, int, int] | None,
                 label: str, before_export: BeforeExport | None = None) -> ModelSource:
    formats: dict[str, Any] = {}
    if hasattr(module, "formats") and isinstance(getattr(module, "model", None), nn.Module):
        formats = dict(module.formats)  # a CompressedModel: export its architecture
        module = module.model
    module.eval()
    if before_export is not None:
        before_export(module, tuple(input_shape) if input_shape is not None
                      else _default_shape(module), formats)
    return ModelSource(export_module(module, input_shape), formats, label, module)


class _Records(logging.Handler):
    """Collects log records instead of printing them (torch.export logs a whole traceback,
    then raises an exception that says only "check the warnings above")."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _first_cause(records: list[logging.LogRecord]) -> str | None:
    """The underlying error of the first logged exception (its type and first line)."""
    for r in records:
        if r.exc_info and r.exc_info[1] is not None:
            e = r.exc_info[1]
            first = (str(e).strip().splitlines() or [""])[0].split(". ")[0]
            return f"{type(e).__name__}: {first}"
    return None


def _load_pt2(path: Path) -> ModelSource:
    """A ``.pt2`` archive via ``torch.export.load``; anything unreadable is one line naming
    the file (torch's own log output and warnings are captured, never printed)."""
    if not path.is_file():
        raise FrontendError(f"{path} does not exist")
    with open(path, "rb") as f:
        if f.read(4) != b"PK\x03\x04":      # torch.export.save writes a zip archive
            raise FrontendError(f"{path} is not a .pt2 file (not a torch.export zip archive)")
    log = logging.getLogger("torch.export")
    handler = _Records()
    saved = log.handlers, log.propagate, log.level
    log.handlers, log.propagate = [handler], False
    log.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ep = torch.export.load(str(path))
    except Exception as e:  # noqa: BLE001 - unreadable file
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        if "warnings above" in first:
            first = _first_cause(handler.records) or "the archive is damaged"
        raise FrontendError(f"cannot load {path} with torch.export.load: {first}") from None
    finally:
        log.handlers, log.propagate = saved[0], saved[1]
        log.setLevel(saved[2])
    return ModelSource(ep, {}, path.name)


def load_source(model: Any, *, input_shape: tuple[int, int, int] | None = None,
                num_classes: int | None = None, in_channels: int | None = None,
                weights: str | Path | None = None, seed: int | None = 0,
                before_export: BeforeExport | None = None) -> ModelSource:
    """Resolve ``model``: an ``ExportedProgram``, an ``nn.Module`` (a ``CompressedModel``
    keeps its formats), a ``.pt2`` path, a checkpoint path (``shiftbook compress`` output or a
    float checkpoint naming a built-in model) or a built-in model name (``weights``: a
    checkpoint for it; without one the weights are seeded random). ``before_export``: see
    :data:`BeforeExport` (modules only)."""
    if isinstance(model, nn.Module):
        return _from_module(model, input_shape, type(model).__name__, before_export)
    if not isinstance(model, str | Path):
        if isinstance(model, torch.export.ExportedProgram):     # (imports torch.export)
            return ModelSource(model, {}, "exported program")
        raise FrontendError(f"cannot lower a {type(model).__name__}: give a .pt2 file, a "
                            f"checkpoint, a built-in model name or an nn.Module")
    text = str(model)
    path = Path(text)
    if path.suffix == ".onnx":      # plain ONNX or QONNX (sw/frontend/onnx_import.py)
        from .onnx_import import load_onnx

        return load_onnx(path)  # type: ignore[return-value]
    if path.suffix == ".pt2":
        return _load_pt2(path)
    from shiftbook.sw.models import MODELS, build_model

    if path.is_file():
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
        if isinstance(obj, dict) and obj.get("kind") == "compressed":
            from shiftbook.sw.models.compressed import load_compressed

            cm = load_compressed(path)
            return _from_module(cm, input_shape, path.name, before_export)
        if isinstance(obj, dict) and obj.get("model") in MODELS:
            m = build_model(obj["model"], weights=path, seed=None,
                            **dict(obj.get("model_args") or {}))
            return _from_module(m, input_shape, path.name, before_export)
        raise FrontendError(f"{path}: not a .pt2 file, a shiftbook compressed model or a "
                            f"checkpoint naming a built-in model")
    if text in MODELS:
        kw: dict[str, Any] = {}
        if num_classes is not None:
            kw["num_classes"] = num_classes
        if in_channels is not None:
            kw["in_channels"] = in_channels
        m = build_model(text, weights=weights, seed=seed, **kw)
        if input_shape is None:
            size = MODELS[text].input_size
            input_shape = (int(m.conv1.in_channels), size, size)
        return _from_module(m, input_shape, text, before_export)
    raise FrontendError(f"unknown model {text!r}: not a file, and not a built-in model "
                        f"({', '.join(MODELS)})")
