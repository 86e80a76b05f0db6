import math

import pytest
import torch
from torch import nn

from shiftbook.sw.compress import (
    CodebookFormat,
    CompressedModel,
    CompressOptions,
    FormatError,
    LayerPlan,
    ShiftFormat,
    compress,
    load_compressed,
    model_size,
    save_compressed,
    size_report,
)
from shiftbook.sw.compress.core import compressible_layers
from shiftbook.sw.compress.size import MIB
from shiftbook.sw.models import build_model


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        return self.fc(self.bn(self.conv(x)).mean((2, 3)))


def test_hand_computed_sizes():
    m = Tiny()
    r = size_report(m, {"conv": LayerPlan("codebook", k=16, d=9),
                        "fc": LayerPlan("shift", code_bits=6)})
    conv, fc = r.layers
    # conv: 32 sub-vectors * 4 bits + fp16 codebook 16*9*2
    assert conv.paper_bytes == 32 * 4 / 8 + 16 * 9 * 2 == 304
    # hardware: packed indices + one byte per codeword code + scale byte + 8 B BIAS entries
    assert conv.hw_bytes == 16 + 144 + 1 + 8 * 8
    assert fc.paper_bytes == 24 * 6 / 8 and fc.hw_bytes == 24 + 3 + 3 * 8
    assert r.other_params == 16 + 3                         # BN affine + fc bias
    assert r.paper_bytes == 304 + 18 + 4 * 19
    assert r.fp32_bytes == 4 * (288 + 16 + 24 + 3)
    assert r.hw_bytes == 225 + 51
    assert math.isclose(r.ratio, 1324 / 398)
    odd = size_report(m, {"conv": LayerPlan("codebook", k=3, d=9)}).layers[0]
    assert math.isclose(odd.paper_bytes, 32 * math.log2(3) / 8 + 3 * 9 * 2)
    assert odd.hw_bytes == 32 * 2 // 8 + 27 + 1 + 64          # ceil(log2 3) = 2 bits
    fp = size_report(m, {"conv": LayerPlan("fp32", hw_shift=True)}).layers[0]
    assert fp.paper_bytes == 4 * 288 and fp.hw_bytes == 288 + 8 + 64


def _paper_plans(model, d3, fc_k):
    plans = {}
    for name, mod in compressible_layers(model)[1:]:
        if isinstance(mod, nn.Linear):
            plans[name] = LayerPlan("codebook", k=fc_k, d=4)
        elif mod.kernel_size == (3, 3):
            plans[name] = LayerPlan("codebook", k=256, d=d3)
        else:
            plans[name] = LayerPlan("codebook", k=256, d=4)
    return plans


def test_paper_resnet18_sizes():
    m = build_model("resnet18")
    small = size_report(m, _paper_plans(m, 9, 2048))
    assert round(small.paper_mib, 2) == 1.54             # the paper's 1.54 MB (29x)
    assert round(small.ratio) == 29
    assert round(small.fp32_bytes / MIB, 1) == 44.6
    large = size_report(m, _paper_plans(m, 18, 2048))
    assert round(large.paper_mib, 2) == 1.03             # 1.03 MB (43x)
    assert round(large.ratio) == 43


def test_format_validation():
    with pytest.raises(FormatError, match="does not divide"):
        CodebookFormat(4, 5, 4, torch.zeros(4, 5), torch.zeros(2, 2), torch.zeros(2), (2, 9))
    with pytest.raises(FormatError, match="index outside"):
        CodebookFormat(2, 3, 4, torch.zeros(2, 3), torch.full((2, 3), 2), torch.zeros(2),
                       (2, 9))
    with pytest.raises(FormatError, match="codes outside"):
        ShiftFormat(2, torch.zeros(1), torch.full((1, 3), 16))
    f = CodebookFormat(2, 3, 2, torch.tensor([[1, 0, 8], [5, 4, 4]]),
                       torch.tensor([[0, 1], [1, 1]]), torch.tensor([1, 1]), (2, 6))
    # codes: 1 -> 2, 0 -> 1, 8 (zero flag) -> 0, 5 -> -2, 4 -> -1; scale 2**-1
    assert f.decode().tolist() == [[1.0, 0.5, 0.0, -1.0, -0.5, -0.5],
                                   [-1.0, -0.5, -0.5, -1.0, -0.5, -0.5]]


def test_save_load_export_roundtrip(tmp_path, tiny_loaders, resnet8):
    tr, te = tiny_loaders
    cm = compress(resnet8, "deepshift-q", tr, te, CompressOptions(epochs=0, progress=False),
                  model_name="resnet8", model_args={"num_classes": 10, "in_channels": 1})
    # give one layer a codebook format to cover both kinds
    w = cm.model.fc.weight
    cb = CodebookFormat(2, 4, 4, torch.tensor([[0, 1, 2, 3], [16, 17, 18, 32]]),
                        torch.randint(0, 2, (10, 16), generator=torch.Generator()
                                      .manual_seed(0)), torch.full((10,), 6), tuple(w.shape))
    cm.attach("fc", cb)
    x = te.dataset.tensors[0][:4]
    cm.eval()
    ref = cm(x)
    save_compressed(tmp_path / "c.pt", cm)
    obj = torch.load(tmp_path / "c.pt", weights_only=True)
    assert set(obj) >= {"state_dict", "formats", "model", "model_args", "meta"}
    back = load_compressed(tmp_path / "c.pt")
    assert torch.equal(back(x), ref)
    assert isinstance(back.formats["fc"], CodebookFormat)
    assert back.model.fc.shiftbook_format.k == 2
    assert torch.equal(back.formats["layer1.0.conv1"].codes, cm.formats["layer1.0.conv1"].codes)
    ep = torch.export.export(back, (x,))
    assert torch.equal(ep.module()(x), ref)
    torch.export.save(ep, tmp_path / "c.pt2")
    assert torch.equal(torch.export.load(tmp_path / "c.pt2").module()(x), ref)
    sz = model_size(back)
    assert sz.layers[-1].kind == "codebook" and sz.layers[0].kind == "shift"


def test_tampered_weight_is_detected(tiny_loaders, resnet8):
    tr, te = tiny_loaders
    cm = compress(resnet8, "deepshift-q", tr, te, CompressOptions(epochs=0, progress=False))
    with torch.no_grad():
        cm.model.layer1[0].conv1.weight[0, 0, 0, 0] += 1e-3
    with pytest.raises(FormatError, match="layer1.0.conv1"):
        cm.check()
    assert isinstance(cm, CompressedModel)


def test_codebook_format_is_a_view_of_the_kernel_record():
    """``CodebookFormat.weights`` is the kernel's ``CodebookWeights`` (same codes); a block
    size the decoder cannot read is a valid compressed layer but no kernel record."""
    from shiftbook.weights import CodebookWeights, WeightFormatError

    g = torch.Generator().manual_seed(0)
    f = CodebookFormat(4, 9, 4, torch.randint(0, 64, (4, 9), generator=g),
                       torch.randint(0, 4, (3, 2), generator=g), torch.full((3,), 5),
                       (3, 2, 3, 3))
    w = f.weights
    assert isinstance(w, CodebookWeights) and (w.k, w.d, w.shape) == (4, 9, (3, 2, 3, 3))
    assert torch.equal(f.codes(), torch.from_numpy(w.decode()))
    assert f.index_bits == w.index_bits == 2
    odd = CodebookFormat(4, 4, 4, torch.zeros(4, 4), torch.zeros(3, 18), torch.zeros(3),
                         (3, 8, 3, 3))
    assert odd.codes().shape == (3, 8, 3, 3)
    with pytest.raises(WeightFormatError, match="d=4 does not fit the 3x3 kernel"):
        _ = odd.weights
