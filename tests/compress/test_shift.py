import numpy as np
import torch

from shiftbook import numerics as nx
from shiftbook.sw.compress import CompressOptions, ShiftFormat, compress
from shiftbook.sw.compress.core import ShiftSTE
from shiftbook.sw.compress.shift import PSParam, _PSFn, inq_partition, inq_w_frac

W = torch.tensor([[1.0, 0.7, 0.75, 0.3, -0.36, 0.01]])


def test_ste_log_rounding_values():
    # exp_bits=2: the largest |w| maps to 2**3 (w_frac=3); thresholds at 2**(n+0.5).
    q = ShiftSTE(2, "log")(W)
    assert q.tolist() == [[1.0, 0.5, 1.0, 0.25, -0.5, 0.0]]


def test_ste_linear_rounding_values():
    # linear domain: threshold between 2**n and 2**(n+1) is 1.5 * 2**n.
    q = ShiftSTE(2, "linear")(W)
    assert q.tolist() == [[1.0, 0.5, 1.0, 0.25, -0.25, 0.0]]


def test_ste_gradient_is_straight_through():
    w = W.clone().requires_grad_(True)
    g = torch.arange(6.0).reshape(1, 6)
    (ShiftSTE(2, "log")(w) * g).sum().backward()
    assert torch.equal(w.grad, g)


def test_ste_per_channel_scale_and_exponent_range():
    w = torch.tensor([[0.5, 0.5 * 2 ** -15, 0.5 * 2 ** -16], [4.0, 1.0, -0.0]])
    q = ShiftSTE(4, "log")(w)
    # Each row has its own scale; 16 exponent levels below the row's maximum, then zero.
    assert q.tolist() == [[0.5, 0.5 * 2 ** -15, 0.0], [4.0, 1.0, 0.0]]


def test_ps_gradients_follow_deepshift():
    p = torch.tensor([2.4, 0.6], requires_grad=True)
    s = torch.tensor([0.7, -0.6], requires_grad=True)
    scale = torch.tensor([0.25, 0.25])
    w = _PSFn.apply(p, s, scale)
    assert w.tolist() == [1.0, -0.5]       # round(S) * 2**round(P) * 2**-2
    w.backward(torch.tensor([1.0, 2.0]))
    assert torch.allclose(p.grad, torch.tensor([1.0, -1.0]) * np.log(2.0))
    assert s.grad.tolist() == [1.0, 2.0]


def test_ps_init_and_codes_roundtrip():
    w = torch.tensor([[0.5, -0.25, 0.0, 0.126]])
    ps = PSParam(w, 4, "log", True)
    assert ps.S.tolist() == [[1.0, -1.0, 0.0, 1.0]]
    codes = ps.codes()
    assert torch.equal(ps(w), ShiftFormat(4, ps.w_frac, codes).decode())


def test_inq_partition_fractions():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(8, 4, 3, 3, generator=g)
    frozen = torch.zeros_like(w, dtype=torch.bool)
    for portion in (0.5, 0.75, 0.875, 1.0):
        new = inq_partition(w, frozen, portion)
        assert not bool((new & frozen).any())
        if bool(new.any()) and not bool(frozen.all()):
            # the newly quantized weights are the largest of the still-float ones
            rest = w.abs()[~(frozen | new)]
            if rest.numel():
                assert float(w.abs()[new].min()) >= float(rest.max())
        frozen |= new
        assert int(frozen.sum()) == round(portion * w.numel())


def test_inq_w_frac():
    emax = 15
    w = torch.tensor([[0.75, 0.1], [0.74, 0.0], [0.0, 0.0]])
    assert inq_w_frac(w, 4, True).tolist() == [emax, emax + 1, 0]
    assert inq_w_frac(w, 4, False).tolist() == [emax] * 3


def _check_shift_model(cm, exp_bits):
    for name, fmt in cm.formats.items():
        assert isinstance(fmt, ShiftFormat)
        mod = cm.model.get_submodule(name)
        v = nx.decode_shift(fmt.codes.numpy(), exp_bits)
        assert set(np.unique(np.abs(v))) <= {0} | {1 << e for e in range(1 << exp_bits)}
        assert torch.equal(mod.weight, fmt.decode())


def test_methods_run_and_give_shift_codes(tiny_loaders, resnet8):
    tr, te = tiny_loaders
    for method in ("deepshift-q", "deepshift-ps", "inq"):
        cm = compress(resnet8, method, tr, te, CompressOptions(epochs=1, progress=False,
                                                               exp_bits=3))
        _check_shift_model(cm, 3)
        steps = [r["step"] for r in cm.meta["steps"]]
        assert steps[0] == "float" and steps[-1] == "hardware weights"
        if method == "inq":
            assert [s for s in steps if s.startswith("inq") and s.endswith("%")] == [
                "inq 50%", "inq 75%", "inq 87.5%", "inq 100%"]
    # the float model is untouched
    assert not hasattr(resnet8.conv1, "parametrizations")
