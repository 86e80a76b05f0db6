"""Shape-only checks before calibration (issue 20): the compiler's layout of a skeleton graph
(sw/compiler/layout.py) bounds the real image from below, and a model too large for the
config is refused before any calibration or quantization, in one line."""

from __future__ import annotations

import numpy as np
import pytest

from shiftbook.cli import main
from shiftbook.config import PRESETS, CoreConfig
from shiftbook.sw.compiler.layout import check_layout
from shiftbook.sw.flow_compile import compile_model, early_checks
from shiftbook.sw.frontend import load_source, trace_program
from shiftbook.sw.frontend import quantize as quantize_mod
from shiftbook.sw.frontend import source as source_mod
from shiftbook.sw.frontend.precheck import (
    check_kept_accumulators,
    module_memory_bound,
    skeleton_graph,
)
from shiftbook.sw.models import build_model


def _net(model: str, cfg: CoreConfig):
    src = load_source(model, seed=0)
    return trace_program(src.program, formats=src.formats, exp_bits=cfg.exp_bits, detect=True)


def test_layout_is_a_lower_bound_of_the_compiled_image():
    cfg = PRESETS["small"]
    early = early_checks(_net("resnet8", cfg), cfg)
    _, prog, _, _ = compile_model("resnet8", config=cfg, calib=2)
    data = len(prog.memory) - len(prog.program)
    assert early.data_bytes <= data <= early.data_bytes + 64     # (program-base alignment)
    assert early.min_program_bytes <= len(prog.program)
    assert early.min_image_bytes <= len(prog.memory)


def test_skeleton_keeps_every_shape():
    cfg = PRESETS["small"]
    net = _net("resnet8", cfg)
    g = skeleton_graph(net, cfg)
    assert [op.name for op in g.ops] == [lay.name for lay in net.layers]
    assert {n: t.shape for n, t in g.tensors.items()} == \
        {net.input: net.input_shape, **{lay.output: lay.out_shape for lay in net.layers}}


def test_too_large_model_is_refused_before_export_and_calibration(tmp_path, capsys,
                                                                   monkeypatch):
    """A float module too large for the config is refused from one forward pass of its
    shapes: before ``torch.export`` (seconds for a ResNet-50) and before any calibration."""
    def never(what):
        def fail(*a, **k):
            raise AssertionError(f"{what} a model that cannot fit")
        return fail

    monkeypatch.setattr(quantize_mod, "quantize_net", never("quantized"))
    monkeypatch.setattr(source_mod, "export_module", never("exported"))
    out = tmp_path / "b"
    rc = main(["compile", "resnet50", "--config", "base", "-o", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and not out.exists()
    assert err[-1].startswith("shiftbook compile: error: program and data need at least ")
    assert "the core addresses 33,554,432 (config 'base'" in err[-1]
    assert "the largest layer, 'layer4.0.conv2'" in err[-1]


@pytest.mark.parametrize("model", ["resnet8", "resnet18", "resnet50"])
def test_module_bound_is_below_the_layout(model):
    """The module-level bound never exceeds the layout's data bytes (so it refuses nothing
    the compiler would take), and is close to it for the built-in ResNets."""
    cfg = PRESETS["base-xl"]
    early = early_checks(_net(model, cfg), cfg)
    m = build_model(model, seed=0)
    found = module_memory_bound(m, source_mod._default_shape(m), cfg)
    assert found is not None
    assert 0.9 * early.data_bytes <= found[0] <= early.data_bytes


def test_base_xl_takes_resnet50():
    cfg = PRESETS["base-xl"]
    early = early_checks(_net("resnet50", cfg), cfg)
    assert early.min_image_bytes <= cfg.mem_words * cfg.bus_bytes


def test_buffer_too_small_is_refused_by_the_layout():
    cfg = CoreConfig(rows=4, cols=8, obuf_bytes=16, name="tiny-out")   # < a 32-byte row
    with pytest.raises(ValueError, match="does not fit the 16-byte output buffer"):
        check_layout(skeleton_graph(_net("resnet8", cfg), cfg), cfg)


def test_kept_codes_beyond_the_accumulator_are_refused():
    cfg = CoreConfig(acc_bits=16, exp_bits=3, name="acc16")
    net = _net("resnet8", cfg)
    lay = next(lay for lay in net.layers if lay.kind == "conv")
    from shiftbook.sw.frontend.float_net import FixedWeights

    o = lay.weight.shape[0]
    codes = np.full(lay.weight.shape, (1 << cfg.exp_bits) - 1, np.int64)  # all +2**7
    lay.fixed = FixedWeights(codes, cfg.exp_bits, np.zeros(o, np.int64), np.ones(o))
    with pytest.raises(ValueError, match=f"layer {lay.name!r}.*16-bit accumulator"):
        check_kept_accumulators(net, cfg)
