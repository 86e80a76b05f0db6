"""ONNX / QONNX import (issue 17): Brevitas models exported to QONNX compile, agree exactly with
qonnx's executor where exactly representable, and run bit-exact in RTL; a plain float ONNX
ResNet-8 compiles; unsupported nodes and malformed files are refused in one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper
from onnx_models import BasicBlock, FloatWeight4, SmallCnn, export, pot_weights

from shiftbook import flow
from shiftbook.cli import main
from shiftbook.sw.frontend import FrontendError, load_source
from shiftbook.sw.frontend.onnx_lower import compare_reference

MODELS = {
    "pot-cnn": (lambda: pot_weights(SmallCnn()), (1, 8, 8)),
    "pot-block": (lambda: pot_weights(BasicBlock(), seed=1), (3, 6, 6)),
    "w4-cnn": (lambda: SmallCnn(FloatWeight4), (1, 8, 8)),
}


@pytest.fixture(scope="module")
def qonnx_files(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("qonnx")
    torch.manual_seed(0)
    return {name: export(make(), shape, d / f"{name}.onnx")
            for name, (make, shape) in MODELS.items()}


@pytest.fixture(scope="module")
def compiled(qonnx_files, tmp_path_factory) -> dict[str, flow.Compiled]:
    d = tmp_path_factory.mktemp("bundles")
    return {name: flow.compile(p, config="tiny", calib=8, output=d / name)
            for name, p in qonnx_files.items()}


@pytest.mark.parametrize("name", ["pot-cnn", "pot-block"])
def test_power_of_two_models_agree_exactly_with_qonnx(qonnx_files, compiled, name):
    c = compiled[name]
    assert any("reference check (qonnx executor" in n and "exact" in n for n in c.lowered.notes)
    # every weighted layer kept the quantizer's codes; every activation scale is the QONNX one
    convs = [r for r in c.lowered.layers if r["kind"] in ("conv2d", "linear")]
    assert convs and all(r["weights"] == "detected" for r in convs)
    assert all(t.frac == 5 for t in c.graph.tensors.values())
    src = load_source(str(qonnx_files[name]))
    x = torch.randn(6, *src.input_shape, generator=torch.Generator().manual_seed(3))
    r = compare_reference(src, c.lowered, x)
    assert r["exact"], r
    assert np.count_nonzero(r["ref"]) > r["ref"].size // 4     # not a trivially zero output
    if name == "pot-block":
        assert any(op.residual for op in c.graph.ops)


def test_non_power_of_two_weights_are_converted_with_their_error(compiled):
    notes = compiled["w4-cnn"].lowered.notes
    assert sum("converted post-training" in n for n in notes) == 3
    assert sum("relative weight error" in n for n in notes) == 3
    assert any(n.startswith("reference check (qonnx executor") and "top-1" in n for n in notes)


@pytest.mark.rtl
@pytest.mark.parametrize("name", list(MODELS))
def test_qonnx_models_bit_exact_in_rtl(compiled, name):
    from shiftbook.sim.rtl.toolchain import ToolchainError, setup_verilator_env

    try:
        setup_verilator_env()
    except ToolchainError as e:
        pytest.skip(str(e))
    res = flow.run(compiled[name].bundle, level="rtl")
    assert res.bit_exact and all(lay.bit_exact for lay in res.layers), res.first_mismatch


def test_activation_quantizers_the_core_cannot_honour_are_noted(tmp_path):
    import brevitas.nn as qnn
    from brevitas.inject.enum import ScalingImplType
    from brevitas.quant import Int8ActPerTensorFloat, Uint8ActPerTensorFixedPoint

    class FloatScale(Int8ActPerTensorFloat):
        scaling_impl_type = ScalingImplType.CONST
        scaling_init = 3.0          # scale 3/127: not a power of two

    m = pot_weights(SmallCnn())
    m.r2 = qnn.QuantReLU(act_quant=FloatScale, return_quant_tensor=False)
    m.r3 = qnn.QuantReLU(act_quant=Uint8ActPerTensorFixedPoint, return_quant_tensor=False)
    p = export(m, (1, 8, 8), tmp_path / "m.onnx", half_up=False)
    c = flow.compile(p, config="tiny", calib=4)
    notes = " | ".join(c.lowered.notes)
    assert "scale 0.0234375 is not a power of two; its scale is calibrated instead" in notes
    assert "range of an unsigned 8-bit quantizer [0, 255]" in notes
    assert "rounding ROUND" in notes
    assert "reference check (qonnx executor, 4 image(s)): largest error" in notes


# The TorchScript exporter (deprecated by torch) keeps BatchNormalization nodes; the default
# torch.export-based one folds them and writes the average pool as ReduceMean.
@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::FutureWarning")
@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_plain_float_onnx_resnet8_compiles(tmp_path, exporter):
    import onnxoptimizer

    from shiftbook.sw.models import build_model

    m = build_model("resnet8", seed=0).eval()
    p = tmp_path / "r8.onnx"
    if exporter == "torchscript":
        torch.onnx.export(m, (torch.zeros(1, 3, 32, 32),), str(p), dynamo=False,
                          do_constant_folding=False, training=torch.onnx.TrainingMode.PRESERVE)
    else:
        torch.onnx.export(m, (torch.zeros(1, 3, 32, 32),), str(p), dynamo=True)
    proto = onnxoptimizer.optimize(onnx.load(str(p)), ["eliminate_identity"])
    onnx.save(proto, str(p))
    ops = {n.op_type for n in proto.graph.node}
    assert ("BatchNormalization" if exporter == "torchscript" else "ReduceMean") in ops
    assert "Quant" not in ops
    c = flow.compile(p, config="small", calib=2, output=tmp_path / "b")
    assert len(c.graph.ops) >= 10
    assert any(r["kind"] == "sumpool2d" for r in c.lowered.layers)
    assert any(n.startswith("reference check (onnxruntime, 2 image(s))") for n in
               c.lowered.notes)


def _graph_file(path: Path, node: onnx.NodeProto, weight: np.ndarray | None,
                out_shape: list[int]) -> Path:
    inits = [] if weight is None else [onnx.numpy_helper.from_array(weight, "w")]
    g = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 6, 6])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)], initializer=inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return path


@pytest.mark.parametrize("case", ["sigmoid", "convtranspose", "grouped"])
def test_unsupported_node_refused_with_name_op_and_position(tmp_path, case, capsys):
    w = np.ones((4, 2, 3, 3), np.float32)
    if case == "sigmoid":
        node, wt, shape = helper.make_node("Sigmoid", ["x"], ["y"], name="gate"), None, \
            [1, 4, 6, 6]
        want = "node 'gate' (op Sigmoid, position 1 of 1)"
    elif case == "convtranspose":
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], name="up",
                                kernel_shape=[3, 3])
        wt, shape, want = np.ones((4, 4, 3, 3), np.float32), [1, 4, 8, 8], \
            "node 'up' (op ConvTranspose, position 1 of 1)"
    else:
        node = helper.make_node("Conv", ["x", "w"], ["y"], name="dw", group=2,
                                kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        wt, shape, want = w, [1, 4, 6, 6], "grouped convolution (group=2)"
    p = _graph_file(tmp_path / f"{case}.onnx", node, wt, shape)
    with pytest.raises(FrontendError, match=r"position 1 of 1") as e:
        load_source(str(p))
    assert want in str(e.value) and "\n" not in str(e.value)
    assert main(["compile", str(p), "-o", str(tmp_path / "b")]) != 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and want in err[0]


def test_malformed_onnx_one_line(tmp_path, capsys):
    p = tmp_path / "bad.onnx"
    p.write_bytes(b"\x08\x07not a protobuf at all\xff\xff\xff")
    assert main(["compile", str(p), "-o", str(tmp_path / "b")]) != 0
    err = [ln for ln in capsys.readouterr().err.splitlines() if "error" in ln]
    assert len(err) == 1 and "bad.onnx" in err[0] and "not an ONNX model" in err[0]
    assert not (tmp_path / "b").exists()
