import pytest
import torch

from shiftbook.sw.data import DataError, digits_loaders, load_digits
from shiftbook.sw.models import ModelError, build_model, load_checkpoint, save_checkpoint
from shiftbook.sw.train import TrainConfig, TrainError, evaluate, train


def _nparams(m):
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name,count", [
    ("resnet18", 11_689_512),   # torchvision's published parameter counts
    ("resnet34", 21_797_672),
    ("resnet50", 25_557_032),
])
def test_imagenet_resnets_match_torchvision_counts(name, count):
    assert _nparams(build_model(name)) == count


def test_imagenet_keys_are_torchvision_keys():
    keys = set(build_model("resnet50").state_dict())
    for k in ("conv1.weight", "bn1.running_var", "layer1.0.conv3.weight",
              "layer1.0.downsample.0.weight", "layer1.0.downsample.1.weight",
              "layer4.2.bn3.num_batches_tracked", "fc.weight", "fc.bias"):
        assert k in keys
    assert "layer1.0.downsample.0.weight" not in build_model("resnet18").state_dict()


def test_cifar_resnet_sizes():
    # ResNet-20 with option-A shortcuts has 269,722 parameters; option B adds two 1x1
    # convolutions (16*32, 32*64) and their BN affine (2*32, 2*64).
    assert _nparams(build_model("resnet20")) == 269_722 + 512 + 64 + 2048 + 128
    m = build_model("resnet8", num_classes=10, in_channels=1)
    assert m.conv1.weight.shape == (16, 1, 3, 3)
    assert len(m.layer1) == 1 and len(build_model("resnet56").layer3) == 9
    assert m(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


def test_build_model_seed_and_weights(tmp_path):
    a = build_model("resnet8", seed=3)
    b = build_model("resnet8", seed=3)
    assert torch.equal(a.conv1.weight, b.conv1.weight)
    save_checkpoint(tmp_path / "a.pt", a, name="resnet8", model_args={})
    c = build_model("resnet8", seed=4, weights=tmp_path / "a.pt")
    assert torch.equal(a.layer3[0].conv2.weight, c.layer3[0].conv2.weight)
    assert load_checkpoint(tmp_path / "a.pt")["model"] == "resnet8"
    with pytest.raises(ModelError, match="does not fit"):
        build_model("resnet8", num_classes=5, weights=tmp_path / "a.pt")
    with pytest.raises(ModelError, match="unknown model"):
        build_model("vgg16")


def test_digits_split_and_normalisation(digits):
    assert digits.x_train.shape == (1437, 1, 32, 32)
    assert digits.x_test.shape == (360, 1, 32, 32)
    assert torch.bincount(digits.y_test, minlength=10).min() >= 35   # stratified
    assert abs(float(digits.x_train.mean())) < 1e-4
    assert abs(float(digits.x_train.std()) - 1.0) < 1e-3
    again = load_digits(size=32, channels=3)
    assert again.x_train.shape[1] == 3
    assert torch.equal(again.x_test[:, 0], digits.x_test[:, 0])
    with pytest.raises(DataError):
        load_digits(channels=2)


def test_loaders_are_seeded():
    a = next(iter(digits_loaders(batch_size=8, seed=1)[0]))[1]
    b = next(iter(digits_loaders(batch_size=8, seed=1)[0]))[1]
    assert torch.equal(a, b)


def test_trainer_learns(tiny_loaders, resnet8):
    tr, te = tiny_loaders
    before = evaluate(resnet8, tr)
    hist = train(resnet8, tr, TrainConfig(epochs=3, lr=0.05, progress=False))
    assert hist[-1]["loss"] < hist[0]["loss"]
    assert evaluate(resnet8, tr) > before
    with pytest.raises(TrainError):
        train(resnet8, tr, TrainConfig(epochs=1, optimizer="lbfgs", progress=False))
