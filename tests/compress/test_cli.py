import json

import pytest
import torch

from shiftbook.cli import main
from shiftbook.sw.compress import CodebookFormat, ShiftFormat, load_compressed
from shiftbook.sw.models import build_model, save_checkpoint


def _err(capsys):
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("argv,msg", [
    (["--method", "zip"], "unknown method 'zip'"),
    (["--method", "pq", "--d", "7"], "block size d=7 does not divide layer layer1.0.conv1"),
    (["--method", "pq", "--d", "9"], "does not divide layer layer2.0.downsample.0"),
    (["--method", "pq", "--k", "100000", "--d", "4"], "larger than the number of sub-vectors"),
    (["--method", "pq", "--k", "200", "--no-clamp"], "larger than the number of sub-vectors"),
    (["--method", "pq", "--preset", "huge"], "unknown PQ preset"),
    (["--method", "kmeans", "--k", "200"], "larger than the number of weights (144)"),
    (["--method", "kmeans", "--k", "512"], "k=512 must be in [2, max_k=256]"),
    (["--method", "deepshift-q", "--exp-bits", "9"], "exp_bits=9"),
    (["--method", "inq", "--data", "mnist"], "unknown data set"),
])
def test_cli_bad_options_one_line(tmp_path, capsys, argv, msg):
    rc = main(["compress", "resnet8", "-o", str(tmp_path / "o.pt"), "--quiet"] + argv)
    assert rc == 2
    err = _err(capsys)
    assert msg in err and err.startswith("shiftbook compress: error:")
    assert not (tmp_path / "o.pt").exists()


def test_cli_bad_model(tmp_path, capsys):
    assert main(["compress", "nosuch.pt", "--method", "pq", "-o", str(tmp_path / "o")]) == 2
    assert "does not exist" in _err(capsys)
    assert main(["compress", "resnet18", "--method", "pq", "-o", str(tmp_path / "o")]) == 2
    assert "224x224" in _err(capsys)


def test_cli_compress_from_checkpoint(tmp_path, capsys):
    m = build_model("resnet8", num_classes=10, in_channels=1, seed=1)
    save_checkpoint(tmp_path / "f.pt", m, name="resnet8",
                    model_args={"num_classes": 10, "in_channels": 1})
    out = tmp_path / "c.pt"
    rc = main(["compress", str(tmp_path / "f.pt"), "--method", "deepshift-q", "--epochs", "0",
               "--exp-bits", "3", "-o", str(out), "--json", str(tmp_path / "s.json"),
               "--quiet"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "layer3.0.conv2" in text and "ratio" not in text.split("\n")[0]
    assert "x vs fp32" in text and "test accuracy: float" in text
    cm = load_compressed(out)
    assert all(isinstance(f, ShiftFormat) and f.exp_bits == 3 for f in cm.formats.values())
    s = json.loads((tmp_path / "s.json").read_text())
    assert s["method"] == "deepshift-q" and len(s["layers"]) == 10
    # 6-bit codes per weight (exp_bits 3 + sign + zero)
    assert s["layers"][1]["bits_per_weight"] == 5.0
    x = torch.zeros(1, 1, 32, 32)
    assert torch.equal(cm(x), load_compressed(out)(x))


def test_cli_kmeans_writes_codebooks(tmp_path, capsys):
    m = build_model("resnet8", num_classes=10, in_channels=1, seed=1)
    save_checkpoint(tmp_path / "f.pt", m, name="resnet8",
                    model_args={"num_classes": 10, "in_channels": 1})
    rc = main(["compress", "resnet8", "--weights", str(tmp_path / "f.pt"), "--method",
               "kmeans", "--k", "4", "--epochs", "0", "-o", str(tmp_path / "k.pt"),
               "--quiet"])
    assert rc == 0
    assert "codebook k=4 d=1" in capsys.readouterr().out
    cm = load_compressed(tmp_path / "k.pt")
    assert all(isinstance(f, CodebookFormat) and f.k == 4 for f in cm.formats.values())
