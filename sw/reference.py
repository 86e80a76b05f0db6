"""Golden reference (L0): the integer IR executed with torch ops.

``run_graph`` is the one golden integer executor (the compiler's tests, the simulators'
comparisons and the frontend's calibration all call it). It runs one image ``(C, H, W)`` or a
batch ``(N, C, H, W)``: it decodes shift codes with ``shiftbook/numerics``, convolves in float64
(exact: every partial sum is an integer far below 2**53, because the compiler proves it fits
the accumulator) and requantizes with ``numerics.requantize``. It returns every tensor of the
graph.

Also here: ``quantize_conv`` (float weights of ONE layer -> IR op with calibrated scales) and
``random_layer`` (seeded random layers for the CLI and the tests, including extreme cases).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from shiftbook import numerics as nx
from shiftbook.sw.ir import Conv2d, Graph, IRError, Linear, MaxPool2d, SumPool2d, TensorSpec
from shiftbook.weights import CodebookWeights, WeightFormatError, as_4d, to_blocks

__all__ = ["run_graph", "conv_acc", "quantize_conv", "random_layer", "RandomLayer",
           "float_conv", "add_second_term", "WEIGHT_DISTS", "INPUT_DISTS", "WEIGHT_FORMATS",
           "random_codebook", "default_block", "random_pool"]

WEIGHT_DISTS = ("normal", "zero", "extreme", "sparse")
INPUT_DISTS = ("normal", "uniform", "extreme", "zero")
#: Stored weight formats of a random layer: raw shift codes, a scalar codebook (k-means
#: weight sharing, d = 1) or a product-quantized codebook (k codewords of d codes).
WEIGHT_FORMATS = ("shift", "two-term", "kmeans", "pq")
_RAW_FORMATS = ("shift", "two-term")


def conv_acc(x: np.ndarray, op: Conv2d) -> np.ndarray:
    """Accumulator values (int64) of ``op`` on int input ``x``: ``(O, OH, OW)`` for one image
    ``(C, H, W)``, ``(N, O, OH, OW)`` for a batch ``(N, C, H, W)``.

    A float64 convolution of integers: exact, because every partial sum is an integer below
    2**52 (checked; the compiler proves the sums fit the accumulator, far below that).
    """
    xa = np.asarray(x, dtype=np.float64)
    single = xa.ndim == 3
    xt = torch.from_numpy(xa[None] if single else xa)
    t, left, b, r = op.padding
    xt = F.pad(xt, (left, r, t, b))
    wt = torch.from_numpy(op.values().astype(np.float64))
    y = F.conv2d(xt, wt, stride=op.stride).numpy()
    if not np.all(np.abs(y) < 2.0**52):
        raise IRError(f"op {op.name!r}: accumulator beyond exact float64 range")
    acc = np.rint(y).astype(np.int64)
    return acc[0] if single else acc


def _run_conv(op: Conv2d, env: dict[str, np.ndarray]) -> np.ndarray:
    """Conv2d/Linear on batched ``env`` tensors: accumulate, then ``numerics.requantize``."""
    acc = conv_acc(env[op.input], op)
    res = env[op.residual] if op.residual else None
    c = (1, acc.shape[1], 1, 1)
    return nx.requantize(acc, op.bias.reshape(c), op.shift.reshape(c), relu=op.relu,
                         residual=res, res_shift=op.res_shift.reshape(c))


def _batched_inputs(graph: Graph, inputs: dict[str, np.ndarray]
                    ) -> tuple[dict[str, np.ndarray], bool]:
    """Graph inputs as int64 batches ``(N, C, H, W)``, checked; and whether they were single
    images ``(C, H, W)``."""
    env: dict[str, np.ndarray] = {}
    single: bool | None = None
    for name in graph.inputs:
        if name not in inputs:
            raise IRError(f"missing value for graph input {name!r}")
        a = np.asarray(inputs[name], dtype=np.int64)
        spec = graph.tensors[name]
        one = a.shape == spec.shape
        if not one and (a.ndim != 4 or a.shape[1:] != spec.shape):
            raise IRError(f"input {name!r} has shape {a.shape}, expected {spec.shape} or "
                          f"(N, *{spec.shape})")
        if single is not None and single != one:
            raise IRError("graph inputs mix single images and batches")
        single = one
        if a.min(initial=0) < nx.ACT_MIN or a.max(initial=0) > nx.ACT_MAX:
            raise IRError(f"input {name!r} has values outside int8")
        env[name] = a[None] if one else a
    return env, bool(single)


def run_graph(graph: Graph, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Execute the graph: the one golden integer executor.

    ``inputs`` maps each graph input to int8 values ``(C, H, W)`` (one image) or
    ``(N, C, H, W)`` (a batch; all inputs alike). Returns every tensor (inputs included),
    int64, with the same leading shape. ``Conv2d``/``Linear`` run here (:func:`conv_acc`, then
    ``numerics.requantize``); other op kinds (``MaxPool2d``, ``SumPool2d``) carry their golden
    integer rule, ``run(*inputs) -> output`` on batched arrays.
    """
    env, single = _batched_inputs(graph, inputs)
    for op in graph.ops:
        if isinstance(op, Conv2d):
            env[op.output] = _run_conv(op, env)
        elif callable(getattr(op, "run", None)):
            env[op.output] = np.asarray(op.run(*(env[t] for t in op.inputs)), dtype=np.int64)
        else:
            raise IRError(f"reference: op kind {op.kind!r} ({op.name!r}) has no golden "
                          f"implementation")
    if single:
        return {k: v[0] for k, v in env.items()}
    return env


# ---------------------------------------------------------------- float -> IR (one layer)
def float_conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None, stride: tuple[int, int],
               padding: tuple[int, int, int, int]) -> np.ndarray:
    """Float64 convolution of ``x`` (C, H, W) with ``w`` (O, I, KH, KW); the float model."""
    xt = torch.from_numpy(np.asarray(x, dtype=np.float64))[None]
    t, left, bo, r = padding
    xt = F.pad(xt, (left, r, t, bo))
    wt = torch.from_numpy(np.asarray(w, dtype=np.float64))
    bt = None if b is None else torch.from_numpy(np.asarray(b, dtype=np.float64))
    return F.conv2d(xt, wt, bt, stride=stride)[0].numpy()


def quantize_conv(name: str, input_spec: TensorSpec, output: str, w: np.ndarray,
                  b: np.ndarray | None, *, exp_bits: int, calib: np.ndarray,
                  stride: tuple[int, int] = (1, 1),
                  padding: tuple[int, int, int, int] = (0, 0, 0, 0), relu: bool = False,
                  acc_bits: int = 32, max_exp: int | None = None, linear: bool = False,
                  rounding: str = "log") -> tuple[Conv2d, TensorSpec]:
    """Quantize one float layer to an IR op.

    Weights -> shift codes with per-output-channel power-of-two scales
    (``numerics.float_to_shift``, largest |w| of a channel at exponent ``max_exp``); bias ->
    accumulator scale; output ``frac`` from the calibrated output range of the quantized
    layer on ``calib`` (int8 input ``(C, H, W)``, the largest ``frac`` whose int8 range holds
    the largest |output|); per-channel ``shift = in.frac + w_frac[o] - out.frac`` (>= 0).
    """
    w = np.asarray(w, dtype=np.float64)
    if linear and w.ndim == 2:
        w = w[:, :, None, None]
    o = w.shape[0]
    emax = (1 << exp_bits) - 1 if max_exp is None else int(max_exp)
    red = (1, 2, 3)
    m = np.max(np.abs(w), axis=red)
    safe = np.where(m > 0, m, 1.0)
    w_frac = np.where(m > 0, emax - np.round(np.log2(safe)), 0).astype(np.int64)
    codes, _ = nx.float_to_shift(w, exp_bits, w_frac=w_frac.reshape(o, 1, 1, 1),
                                 rounding=rounding)
    codes = np.asarray(codes, dtype=np.int64)
    acc_frac = input_spec.frac + w_frac
    bias = np.zeros(o, np.int64) if b is None else np.rint(
        np.asarray(b, dtype=np.float64) * np.exp2(acc_frac)).astype(np.int64)
    lim = (1 << (acc_bits - 1)) - 1
    bias = np.clip(bias, -lim // 2, lim // 2)
    # Calibrate: real output of the quantized layer on the calibration input.
    kind = Linear if linear else Conv2d
    probe = kind(name, input_spec.name, output, weight=codes if not linear else codes[:, :, 0, 0],
                 exp_bits=exp_bits, bias=bias, shift=np.zeros(o, np.int64), w_frac=w_frac,
                 relu=relu, stride=stride, padding=padding)
    acc = conv_acc(calib, probe) + bias[:, None, None]
    real = acc * np.exp2(-acc_frac)[:, None, None]
    if relu:
        real = np.maximum(real, 0)
    top = float(np.max(np.abs(real))) if real.size else 0.0
    out_frac = int(math.floor(math.log2(127.0 / top))) if top > 0 else 0
    out_frac = min(out_frac, int(np.min(acc_frac)))  # shifts must be >= 0
    shift = np.clip(acc_frac - out_frac, 0, acc_bits)
    probe.shift = shift.astype(np.int64)
    x_shape = input_spec.shape
    oh, ow = probe.out_hw((x_shape[1], x_shape[2]))
    return probe, TensorSpec(output, (o, oh, ow), out_frac)


# ---------------------------------------------------------------- random layers
@dataclass
class RandomLayer:
    graph: Graph
    inputs: dict[str, np.ndarray]

    @property
    def op(self) -> Conv2d:
        return self.graph.ops[0]  # type: ignore[return-value]


def _random_input(rng: np.random.Generator, shape: tuple[int, ...], dist: str) -> np.ndarray:
    if dist == "normal":
        return np.clip(np.rint(rng.normal(0, 32, shape)), -128, 127).astype(np.int64)
    if dist == "uniform":
        return rng.integers(-128, 128, shape).astype(np.int64)
    if dist == "extreme":
        return rng.choice(np.array([-128, 127], np.int64), shape)
    if dist == "zero":
        return np.zeros(shape, np.int64)
    raise IRError(f"unknown input distribution {dist!r} (one of {', '.join(INPUT_DISTS)})")


def default_block(weights: str, kernel: int) -> int:
    """The block size ``d`` a random ``weights`` format uses when none is given: 1 for
    ``kmeans``; for ``pq`` one kernel (9 for 3x3), or 4 in-channels for 1x1 / linear."""
    if weights == "kmeans":
        return 1
    return kernel * kernel if kernel > 1 else 4


def random_codebook(codes: np.ndarray, k: int, d: int, exp_bits: int,
                    rng: np.random.Generator) -> CodebookWeights:
    """A random codebook format for a layer of shift ``codes``: ``k`` codewords, each a block
    of ``d`` codes drawn at random from the layer's own blocks (so the code statistics and
    the accumulator range stay those of the layer), and uniformly random indices."""
    blocks = to_blocks(codes, d, exp_bits).reshape(-1, d)
    cb = blocks[rng.integers(0, blocks.shape[0], k)]
    o, i, kh, kw = as_4d(codes.shape)
    nblocks = -(-(i * kh * kw) // d)
    idx = rng.integers(0, k, (o, nblocks))
    return CodebookWeights(tuple(codes.shape), k, d, exp_bits, cb, idx)


def _check_random_args(op: str, cin: int, cout: int, kernel: int, stride: int, size: int,
                       weights_dist: str, weights: str, k: int | None, d: int | None
                       ) -> tuple[int | None, int | None]:
    """Check :func:`random_layer`'s arguments; returns the codebook ``(k, d)`` with their
    defaults filled in (``(None, None)`` for raw shift codes)."""
    if weights not in WEIGHT_FORMATS:
        raise IRError(f"unknown weight format {weights!r} (one of {', '.join(WEIGHT_FORMATS)})")
    if weights in _RAW_FORMATS and (k is not None or d is not None):
        raise IRError("--k/--d need a codebook weight format (kmeans or pq)")
    if weights not in _RAW_FORMATS:
        k = 256 if k is None else k
        if weights == "kmeans" and d not in (None, 1):
            raise IRError(f"kmeans is a scalar codebook (d=1), not d={d}")
        d = default_block(weights, 1 if op == "linear" else kernel) if d is None else d
        if not isinstance(k, int) or k < 1 or not isinstance(d, int) or d < 1:
            raise IRError(f"codebook k={k!r} and d={d!r} must be positive integers")
    for v, what in ((cin, "cin"), (cout, "cout"), (kernel, "kernel"), (stride, "stride"),
                    (size, "size")):
        if not isinstance(v, int) or v <= 0:
            raise IRError(f"{what} must be a positive integer, not {v!r}")
    if op not in ("conv", "linear"):
        raise IRError(f"unknown op {op!r} (conv or linear)")
    if weights_dist not in WEIGHT_DISTS:
        raise IRError(f"unknown weight distribution {weights_dist!r} "
                      f"(one of {', '.join(WEIGHT_DISTS)})")
    return k, d


def random_layer(op: str = "conv", cin: int = 16, cout: int = 32, kernel: int = 3,
                 stride: int = 1, padding: int | None = None, size: int = 14, *,
                 seed: int = 0, exp_bits: int = 4, acc_bits: int = 32,
                 max_exp: int | None = None, weights_dist: str = "normal",
                 input_dist: str = "normal", relu: bool = True,
                 residual: bool = False, weights: str = "shift", k: int | None = None,
                 d: int | None = None) -> RandomLayer:
    """A seeded random one-layer graph ``x -> y`` and its int8 input.

    ``weights_dist``: ``normal`` (He-initialised floats quantized by ``quantize_conv``),
    ``sparse`` (the same with 70% zeros), ``zero`` (every code zero), ``extreme`` (every code
    at the largest exponent the accumulator allows, random signs, with a small shift so the
    outputs saturate). ``max_exp`` caps the exponent (8-bit multiplier baselines need <= 6).
    ``residual`` adds the input itself as the residual operand (a ResNet identity shortcut;
    needs ``cin == cout`` and an output the size of the input), aligned to the accumulator
    scale (``res_shift = w_frac``).
    ``weights``: the stored format (``WEIGHT_FORMATS``): ``shift`` raw codes; ``two-term``
    raw codes with a second term each (:func:`add_second_term`); ``kmeans`` a
    scalar codebook of ``k`` codes (``d = 1``); ``pq`` ``k`` codewords of ``d`` codes
    (default :func:`default_block`). Codewords are drawn from the layer's blocks, indices are
    uniformly random (:func:`random_codebook`); the layer's codes are the decoded ones.
    """
    k, d = _check_random_args(op, cin, cout, kernel, stride, size, weights_dist, weights, k, d)
    rng = np.random.default_rng(seed)
    emax = (1 << exp_bits) - 1 if max_exp is None else min(max_exp, (1 << exp_bits) - 1)
    linear = op == "linear"
    kernel, stride, pad4, size_hw = _random_geometry(linear, kernel, stride, padding, size)
    in_spec = TensorSpec("x", (cin, *size_hw), 5 if input_dist != "extreme" else 0)
    x = _random_input(rng, in_spec.shape, input_dist)
    g = Graph(inputs=["x"], outputs=["y"])
    g.add_tensor(in_spec)
    if weights_dist in ("normal", "sparse"):
        fan_in = cin * kernel * kernel
        wshape = (cout, cin, kernel, kernel)
        wf = rng.normal(0, math.sqrt(2.0 / fan_in), wshape)
        if weights_dist == "sparse":
            wf = wf * (rng.random(wshape) > 0.7)
        bf = rng.normal(0, 0.1, cout)
        calib = x if input_dist != "zero" else _random_input(rng, in_spec.shape, "normal")
        conv, out_spec = quantize_conv("layer0", in_spec, "y", wf, bf, exp_bits=exp_bits,
                                       calib=calib, stride=(stride, stride), padding=pad4,
                                       relu=relu, acc_bits=acc_bits, max_exp=emax,
                                       linear=linear)
    else:
        # extreme two-term codes repeat the first term: one bit of accumulator for the sum
        two_extreme = weights == "two-term" and weights_dist == "extreme"
        conv, out_spec = _fixed_code_conv(rng, in_spec, cout, kernel, stride, pad4,
                                          exp_bits=exp_bits,
                                          acc_bits=acc_bits - int(two_extreme), emax=emax,
                                          weights_dist=weights_dist, relu=relu, linear=linear)
    if weights == "two-term":
        real = wf * np.exp2(conv.w_frac.astype(np.float64)).reshape(-1, 1, 1, 1) \
            if weights_dist in ("normal", "sparse") else None
        add_second_term(conv, real, acc_bits=acc_bits)
    g.add_tensor(out_spec)
    if residual:
        if g.tensors["y"].shape != in_spec.shape:
            raise IRError(f"a residual layer needs an output shaped like its input "
                          f"{in_spec.shape}, not {g.tensors['y'].shape}")
        conv.residual = "x"
        conv.res_shift = np.clip(conv.w_frac, -128, 127)
    if weights not in _RAW_FORMATS:
        assert k is not None and d is not None
        try:
            fmt = random_codebook(conv.weight, k, d, exp_bits, rng)
        except WeightFormatError as e:
            raise IRError(f"layer0: {e}") from None
        conv.with_codebook(fmt)
    g.add_op(conv)
    g.validate()
    return RandomLayer(g, {"x": x})


def add_second_term(conv: Conv2d, target: np.ndarray | None, *, acc_bits: int) -> None:
    """Give ``conv`` a second shift term per weight (``Conv2d.weight2``): the nearest power of
    two (linear rounding, zero allowed) to what the first term leaves of ``target`` (the
    weights in units of the codes, ``real * 2**w_frac``); with no target, the second term
    repeats the first (zero and extreme layers: 0, and twice the largest exponent). Refused
    (IRError) if the sums could overflow ``acc_bits``."""
    eb = conv.exp_bits
    if target is None:
        conv.weight2 = conv.weight.copy()
    else:
        rest = np.asarray(target, np.float64).reshape(conv.weight.shape) \
            - nx.decode_shift(conv.weight, eb)
        conv.weight2, _ = nx.float_to_shift(rest, eb, rounding="linear", w_frac=0)
    conv._check_terms()
    try:
        nx.check_acc_fits(conv.values(), conv.bias, acc_bits=acc_bits, what=f"op {conv.name!r}")
    except nx.NumericsError as e:
        raise IRError(str(e)) from None


def _random_geometry(linear: bool, kernel: int, stride: int, padding: int | None, size: int
                     ) -> tuple[int, int, tuple[int, int, int, int], tuple[int, int]]:
    """(kernel, stride, padding (top, left, bottom, right), input (H, W)) of a random layer;
    a linear layer is a 1x1 convolution on a ``(C, 1, 1)`` input. Padding defaults to
    ``kernel // 2``."""
    if linear:
        return 1, 1, (0, 0, 0, 0), (1, 1)
    p = kernel // 2 if padding is None else padding
    if p < 0:
        raise IRError(f"padding must be >= 0, not {p}")
    if kernel > size + 2 * p:
        raise IRError(f"kernel {kernel} is larger than the padded input {size + 2 * p}")
    return kernel, stride, (p, p, p, p), (size, size)


def _fixed_code_conv(rng: np.random.Generator, in_spec: TensorSpec, cout: int, kernel: int,
                     stride: int, pad4: tuple[int, int, int, int], *, exp_bits: int,
                     acc_bits: int, emax: int, weights_dist: str, relu: bool, linear: bool
                     ) -> tuple[Conv2d, TensorSpec]:
    """The ``zero`` / ``extreme`` layer of :func:`random_layer` (codes chosen, not quantized
    from floats): every code zero with a random bias, or every code at the largest exponent
    the accumulator allows with random signs and a small shift (outputs saturate; no ReLU).
    Returns the op and its output tensor ``y`` (frac 0)."""
    cin, h, w = in_spec.shape
    wshape = (cout, cin, kernel, kernel)
    oh = (h + pad4[0] + pad4[2] - kernel) // stride + 1
    ow = (w + pad4[1] + pad4[3] - kernel) // stride + 1
    if weights_dist == "zero":
        codes = np.full(wshape, nx.zero_code(exp_bits), np.int64)
        bias = rng.integers(-1000, 1000, cout)
        shift = np.full(cout, 4, np.int64)
    else:
        limit = (1 << (acc_bits - 1)) - 1
        bias = rng.integers(-(1 << 10), 1 << 10, cout)
        fan_in = cin * kernel * kernel
        e_fit = int(math.floor(math.log2(max(1, (limit - (1 << 10)) / (128 * fan_in)))))
        e = max(0, min(emax, e_fit))
        sign = rng.integers(0, 2, wshape)
        codes = np.asarray(nx.encode_shift(np.zeros(wshape), sign, np.full(wshape, e),
                                           exp_bits), dtype=np.int64)
        shift = np.full(cout, max(0, e + 1), np.int64)
    kind = Linear if linear else Conv2d
    conv = kind("layer0", in_spec.name, "y", weight=codes[:, :, 0, 0] if linear else codes,
                exp_bits=exp_bits, bias=bias, shift=shift, relu=relu and
                weights_dist != "extreme", stride=(stride, stride), padding=pad4)
    return conv, TensorSpec("y", (cout, oh, ow), 0)


def random_pool(kind: str, c: int, h: int, w: int, kernel: tuple[int, int] = (2, 2),
                stride: tuple[int, int] = (2, 2),
                padding: tuple[int, int, int, int] = (0, 0, 0, 0), shift: int = 0, *,
                seed: int = 0, frac: int = 6) -> RandomLayer:
    """A seeded one-layer pooling graph ``x -> y`` (``kind`` ``max``: :class:`MaxPool2d`,
    ``sum``: :class:`SumPool2d` with ``shift``) and a uniform int8 input that holds both
    rails (-128 first, 127 last)."""
    if kind not in ("max", "sum"):
        raise IRError(f"unknown pooling kind {kind!r} (max or sum)")
    rng = np.random.default_rng(seed)
    g = Graph(inputs=["x"], outputs=["y"])
    g.add_tensor(TensorSpec("x", (c, h, w), frac))
    op: MaxPool2d | SumPool2d
    if kind == "max":
        op = MaxPool2d("pool", "x", "y", kernel=kernel, stride=stride, padding=padding)
    else:
        op = SumPool2d("pool", "x", "y", kernel=kernel, stride=stride, padding=padding,
                       shift=shift)
    oh, ow = op.out_hw((h, w))
    g.add_tensor(TensorSpec("y", (c, oh, ow), frac - (shift if kind == "sum" else 0)))
    g.add_op(op)
    g.validate()
    x = rng.integers(-128, 128, (c, h, w)).astype(np.int64)
    x.flat[0], x.flat[-1] = -128, 127
    return RandomLayer(g, {"x": x})
