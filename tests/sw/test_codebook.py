"""Codebook weight formats end to end in software: IR, random layers, compiler, functional
simulator (LOAD CB, WFMT=1) against the golden reference, bundle metadata and validation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from shiftbook.config import PRESETS, CoreConfig
from shiftbook.isa import WFMT_CODEBOOK, WFMT_RAW, Buf, Insn, Opcode, Reg, encode_program
from shiftbook.placement import unpack_tensor
from shiftbook.sim.functional import FunctionalSim, SimError, run_program
from shiftbook.sw.bundle import BundleError, load_bundle, sign_manifest, write_bundle
from shiftbook.sw.compiler import CompileError, compile_graph
from shiftbook.sw.ir import Conv2d, Graph, IRError
from shiftbook.sw.reference import random_layer, run_graph
from shiftbook.weights import CodebookWeights, index_bits, index_rows_per_wgt_row


def _cfg(name: str, **kw: int) -> CoreConfig:
    cfg = PRESETS[name]
    return dataclasses.replace(cfg, name=f"{name}-test", **kw) if kw else cfg


def _run(cfg: CoreConfig, op: str, cin: int, cout: int, kernel: int, size: int, weights: str,
         k: int | None, d: int | None, seed: int = 0, **kw):
    layer = random_layer(op, cin, cout, kernel, size=size, seed=seed, exp_bits=cfg.exp_bits,
                         weights=weights, k=k, d=d, **kw)
    gold = run_graph(layer.graph, layer.inputs)["y"]
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    res = run_program(cfg, prog.memory)
    return layer, prog, res, gold, unpack_tensor(res.memory, prog.tensors["y"])


# (config, op, cin, cout, kernel, size, weights, k, d, extra config fields)
CASES = [
    ("tiny", "conv", 5, 3, 3, 6, "kmeans", 2, None, {}),           # d=1, k=2 (1-bit index)
    ("tiny", "conv", 5, 3, 3, 6, "pq", 16, 9, {}),                 # kernel layout
    ("tiny", "conv", 4, 3, 3, 5, "pq", 5, 3, {}),                  # sub-kernel, k not 2**n
    ("tiny", "linear", 10, 3, 1, 1, "pq", 8, 4, {}),               # 10 % 4: padded block
    ("small", "conv", 5, 11, 3, 6, "pq", 37, 18, {}),              # 5 channels, d=18: padding
    ("small", "linear", 37, 9, 1, 1, "pq", 256, 8, {}),            # 37 % 8, 9 % 8 columns
    ("small", "conv", 7, 10, 1, 5, "pq", 100, 4, {}),              # 1x1 conv, d=4
    ("small", "conv", 6, 9, 3, 5, "kmeans", 256, None, {}),
    ("small-k2048", "conv", 7, 9, 3, 5, "pq", 2048, 18, {}),       # k=2048, 11-bit indices
    ("small-k2048", "linear", 21, 10, 1, 1, "kmeans", 2048, None, {}),
    ("small-k2048", "conv", 4, 5, 3, 4, "pq", 1000, 9, {}),
    # chunked reductions: WGT or ACT too small for the whole layer
    ("tiny", "conv", 21, 3, 3, 6, "pq", 16, 9, {"wbuf_rows": 2}),
    ("tiny", "conv", 21, 3, 3, 6, "pq", 8, 3, {"wbuf_rows": 2}),
    ("tiny", "conv", 13, 5, 3, 6, "pq", 16, 9, {"abuf_bytes": 256}),
    ("tiny", "conv", 37, 5, 1, 6, "kmeans", 3, None, {"abuf_bytes": 256}),
    ("small", "conv", 13, 9, 3, 5, "pq", 32, 18, {"wbuf_rows": 8}),
    ("small", "linear", 70, 9, 1, 1, "pq", 32, 8, {"wbuf_rows": 16}),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(str(v) for v in c[:9]))
def test_functional_matches_golden(case):
    cname, op, cin, cout, kernel, size, weights, k, d, extra = case
    cfg = _cfg(cname, **extra)
    layer, prog, res, gold, got = _run(cfg, op, cin, cout, kernel, size, weights, k, d)
    fmt = layer.op.weight_format
    assert fmt is not None and fmt.k == k
    assert fmt.d == (1 if weights == "kmeans" else d)
    np.testing.assert_array_equal(got, gold)
    lay = prog.layers[0]
    w = lay.weights
    assert w.wfmt == WFMT_CODEBOOK and (w.k, w.d) == (fmt.k, fmt.d)
    assert w.index_bits == index_bits(k)
    assert w.footprint == fmt.footprint().to_dict()
    assert w.codebook_bytes == fmt.k * fmt.d
    # Every chunk but the last holds whole blocks (codewords stay contiguous).
    for c0, c1, _, _ in lay.tiles.chunks[:-1]:
        assert ((c1 - c0) * kernel * kernel) % fmt.d == 0
    # Weight bytes read = index rows (each chunk's rows once per group) + codebook words.
    B = cfg.bus_bytes
    assert lay.codebook_bytes_read == -(-fmt.k * fmt.d // B) * B
    assert lay.weight_bytes_read >= lay.codebook_bytes_read + lay.weight_bytes
    assert res.stats["dma_words"]["load_cb"] * B == lay.codebook_bytes_read


def test_chunked_cases_really_chunk():
    cfg = _cfg("tiny", wbuf_rows=2)
    _, prog, _, _, _ = _run(cfg, "conv", 21, 3, 3, 6, "pq", 16, 9)
    assert len(prog.layers[0].tiles.chunks) > 1
    cfg = _cfg("small", wbuf_rows=8)
    _, prog, _, _, _ = _run(cfg, "conv", 13, 9, 3, 5, "pq", 32, 18)
    chunks = prog.layers[0].tiles.chunks
    assert len(chunks) > 1 and all((c1 - c0) % 2 == 0 for c0, c1, _, _ in chunks[:-1])


def test_raw_layers_unchanged():
    cfg = PRESETS["tiny"]
    _, prog, _, gold, got = _run(cfg, "conv", 5, 3, 3, 6, "shift", None, None)
    np.testing.assert_array_equal(got, gold)
    w = prog.layers[0].weights
    assert w.wfmt == WFMT_RAW and w.k is None
    assert w.footprint["raw_bits"] == 8 * 5 * 3 * 9
    assert not any(i.op == Opcode.LOAD and i.args["buf"] == Buf.CB for i in prog.insns)


def test_program_shape():
    """SET WFMT/CB_* then SYNC COMPUTE then one LOAD CB before the first COMPUTE."""
    cfg = PRESETS["small"]
    layer, prog, _, _, _ = _run(cfg, "conv", 5, 11, 3, 6, "pq", 37, 18)
    ins = prog.insns
    li = next(i for i, x in enumerate(ins) if x.op == Opcode.LOAD and x.args["buf"] == Buf.CB)
    assert ins[li - 1].op == Opcode.SYNC and ins[li - 1].args["mask"] & 2
    regs = {x.args["reg"]: x.args["value"] for x in ins[:li] if x.op == Opcode.SET}
    per = index_rows_per_wgt_row(cfg.cols, 6, cfg.wbuf_row_bytes)
    assert (regs[Reg.WFMT], regs[Reg.CB_D], regs[Reg.CB_K], regs[Reg.IDX_BITS],
            regs[Reg.IDX_PER_ROW]) == (1, 18, 37, 6, per)
    assert ins[li].args["words"] == -(-37 * 18 // cfg.bus_bytes)
    first_compute = next(i for i, x in enumerate(ins) if x.op == Opcode.COMPUTE)
    assert li < first_compute
    assert sum(1 for x in ins if x.op == Opcode.LOAD and x.args["buf"] == Buf.CB) == 1


def test_compiler_refuses_limits():
    layer = random_layer("conv", 4, 4, 3, size=4, weights="pq", k=300, d=9)
    with pytest.raises(CompileError, match=r"k=300 codewords exceeds max_k=256"):
        compile_graph(layer.graph, PRESETS["small"], layer.inputs)
    layer = random_layer("conv", 4, 4, 3, size=4, weights="pq", k=8, d=18)
    with pytest.raises(CompileError, match=r"d=18 exceeds max_d=9"):
        compile_graph(layer.graph, PRESETS["tiny"], layer.inputs)
    mult = dataclasses.replace(PRESETS["tiny"], pe="mult", name="tiny-mult")
    layer = random_layer("conv", 4, 4, 3, size=4, weights="pq", k=8, d=9, max_exp=6)
    with pytest.raises(CompileError, match="shift PE"):
        compile_graph(layer.graph, mult, layer.inputs)


# ---------------------------------------------------------------- IR and random layers
def test_ir_roundtrip_and_checks(tmp_path):
    layer = random_layer("conv", 5, 3, 3, size=6, weights="pq", k=16, d=18, seed=3)
    op = layer.op
    fmt = op.weight_format
    assert fmt.layout == "channels" and fmt.padding == 9 and fmt.indices.shape == (3, 3)
    np.testing.assert_array_equal(op.weight, fmt.decode())
    layer.graph.save(tmp_path)
    g = Graph.load(tmp_path)
    f2 = g.ops[0].weight_format
    assert (f2.k, f2.d) == (16, 18)
    np.testing.assert_array_equal(f2.indices, fmt.indices)
    np.testing.assert_array_equal(f2.codebook, fmt.codebook)
    # Raw layers serialise without codebook keys.
    raw = random_layer("conv", 2, 2, 3, size=4)
    doc, _ = raw.graph.to_json_arrays()
    assert "cb_k" not in doc["ops"][0] and raw.op.weight_format is None
    # The codes must be the decoded codebook.
    bad = op.weight.copy()
    bad[0, 0, 0, 0] ^= 1
    with pytest.raises(IRError, match="differ from the decoded"):
        Conv2d("c", "x", "y", weight=bad, weight_format=fmt)
    with pytest.raises(IRError, match="must be a shiftbook.weights.CodebookWeights"):
        Conv2d("c", "x", "y", weight=op.weight, weight_format=16)
    # Loading checks the saved format the same way (all four keys, valid indices).
    doc, arrays = layer.graph.to_json_arrays()
    assert {k: doc["ops"][0][k] for k in ("cb_k", "cb_d", "cb_codebook", "cb_indices")} == {
        "cb_k": 16, "cb_d": 18, "cb_codebook": "op0.cb_codebook", "cb_indices": "op0.cb_indices"}
    partial = {**doc["ops"][0], "cb_indices": None}
    with pytest.raises(IRError, match="needs all of"):
        Conv2d.from_dict(partial, arrays)
    arrays["op0.cb_indices"] = fmt.indices.copy()
    arrays["op0.cb_indices"][1, 2] = 16
    with pytest.raises(IRError, match="past the codebook"):
        Conv2d.from_dict(doc["ops"][0], arrays)


def test_random_layer_formats():
    lay = random_layer("linear", 10, 3, weights="kmeans", k=4, seed=1)
    f = lay.op.weight_format
    assert (f.k, f.d, f.layout) == (4, 1, "scalar")
    assert set(np.unique(lay.op.weight)) <= set(f.codebook.reshape(-1).tolist())
    assert random_layer("conv", 4, 4, 3, size=4, weights="pq").op.weight_format.d == 9
    assert random_layer("conv", 4, 4, 1, size=4, weights="pq").op.weight_format.d == 4
    assert random_layer("linear", 8, 4, weights="pq", d=8).op.weight_format.d == 8
    with pytest.raises(IRError, match="does not fit the 3x3"):
        random_layer("conv", 4, 4, 3, size=4, weights="pq", d=4)
    with pytest.raises(IRError, match="kmeans is a scalar"):
        random_layer("conv", 4, 4, 3, size=4, weights="kmeans", d=9)
    with pytest.raises(IRError, match="unknown weight format"):
        random_layer("conv", 4, 4, 3, size=4, weights="int4")
    # Seeded: the same arguments give the same codebook and indices.
    a = random_layer("conv", 4, 4, 3, size=4, weights="pq", k=32, seed=7).op.weight_format
    b = random_layer("conv", 4, 4, 3, size=4, weights="pq", k=32, seed=7).op.weight_format
    np.testing.assert_array_equal(a.indices, b.indices)


# ---------------------------------------------------------------- functional simulator
def _tiny_program(cfg: CoreConfig, insns: list[Insn], data: bytes, data_word: int) -> bytes:
    prog = encode_program(insns + [Insn(Opcode.END, {})])
    mem = bytearray(max(len(prog), data_word * cfg.bus_bytes) + len(data))
    mem[: len(prog)] = prog
    mem[data_word * cfg.bus_bytes: data_word * cfg.bus_bytes + len(data)] = data
    return bytes(mem)


def test_load_cb_semantics():
    cfg = PRESETS["tiny"]
    k, d = 3, 5  # 15 codes in two 8-byte words; the 16th byte is ignored
    codes = bytes(range(1, 16)) + bytes([63])
    insns = [Insn(Opcode.SET, {"reg": int(Reg.CB_K), "value": k}),
             Insn(Opcode.SET, {"reg": int(Reg.CB_D), "value": d}),
             Insn(Opcode.LOAD, {"buf": int(Buf.CB), "ext_addr": 16, "buf_addr": 0, "words": 2,
                                "runs": 1, "ext_stride": 0, "buf_stride": 0})]
    sim = FunctionalSim(cfg, _tiny_program(cfg, insns, codes, 16))
    sim.run()
    cb = sim.bufs["CB"].reshape(cfg.max_k, cfg.max_d)
    np.testing.assert_array_equal(cb[:k, :d], np.arange(1, 16).reshape(k, d))
    assert not cb[:, d:].any() and not cb[k:].any()
    insns[1] = Insn(Opcode.SET, {"reg": int(Reg.CB_D), "value": cfg.max_d + 1})
    with pytest.raises(SimError, match="CB_D=10 outside"):
        FunctionalSim(cfg, _tiny_program(cfg, insns, codes, 16)).run()


def test_index_past_codebook_stops_the_simulator():
    cfg = PRESETS["tiny"]
    layer = random_layer("conv", 3, 2, 3, size=4, weights="pq", k=5, d=9, seed=2)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    lay = prog.layers[0]
    mem = bytearray(prog.memory)
    mem[lay.weight_addr] |= 0b111  # column 0, block 0: index 7 >= k=5 (3-bit indices)
    with pytest.raises(SimError, match=r"index 7 of column 0, block 0 is past the codebook"):
        run_program(cfg, bytes(mem))


# ---------------------------------------------------------------- bundle
@pytest.fixture(scope="module")
def cb_bundle(tmp_path_factory):
    cfg = PRESETS["tiny"]
    layer = random_layer("conv", 3, 3, 3, size=4, weights="pq", k=5, d=9, seed=4)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    path = write_bundle(prog, layer.graph, tmp_path_factory.mktemp("cb") / "bundle")
    return cfg, path


def _rewrite(src, dst, *, manifest=None, memory=None):
    import hashlib
    import shutil
    shutil.copytree(src, dst)
    man = json.loads((dst / "manifest.json").read_text())
    if memory is not None:
        mem = bytearray((dst / "memory.bin").read_bytes())
        memory(mem, man)
        (dst / "memory.bin").write_bytes(bytes(mem))
        man["memory"]["sha256"] = hashlib.sha256(bytes(mem)).hexdigest()
    if manifest is not None:
        manifest(man)
    (dst / "manifest.json").write_text(json.dumps(sign_manifest(man)))
    return dst


def test_bundle_codebook_metadata(cb_bundle):
    cfg, path = cb_bundle
    b = load_bundle(path, cfg)
    w = b.layers[0].weights
    assert (w.wfmt, w.k, w.d, w.index_bits, w.layout) == (1, 5, 9, 3, "kernel")
    # 3 out x 3 blocks x 3 bits + 5*9 bytes of codebook
    assert w.footprint == {"index_bits": 27, "codebook_bits": 360, "raw_bits": 0,
                              "bits": 387, "bytes": 4 + 45}
    mem = b.memory
    assert mem[w.codebook_addr: w.codebook_addr + 45] == \
        b.graph().ops[0].weight_format.pack_codebook()


def test_bundle_refuses_index_past_codebook(cb_bundle, tmp_path):
    cfg, path = cb_bundle

    def poke(mem, man):
        mem[man["layers"][0]["weight_addr"]] |= 0b110  # column 0, block 0: index >= 6

    bad = _rewrite(path, tmp_path / "b", memory=poke)
    with pytest.raises(BundleError, match=r"layer 'layer0': index \d of output channel 0, "
                                          r"block 0 is past the codebook \(k=5\)"):
        load_bundle(bad, cfg)


@pytest.mark.parametrize("field,value,msg", [
    ("k", 4, r"program's codebook is k=5, d=9, the manifest declares k=4, d=9"),
    ("d", 3, r"program's codebook is k=5, d=9, the manifest declares k=5, d=3"),
    ("index_bits", 4, r"index_bits=4 does not match k=5"),
    ("codebook_bytes", 44, r"codebook of 44 bytes does not match k\*d"),
    ("wfmt", 7, r"unknown weight format 7"),
])
def test_bundle_refuses_codebook_mismatch(cb_bundle, tmp_path, field, value, msg):
    cfg, path = cb_bundle

    def edit(man):
        man["layers"][0]["weights"][field] = value
        if field == "k":
            man["layers"][0]["weights"]["index_bits"] = 2
        if field in ("k", "d"):
            w = man["layers"][0]["weights"]
            w["codebook_bytes"] = w["k"] * w["d"]

    bad = _rewrite(path, tmp_path / "b", manifest=edit)
    with pytest.raises(BundleError, match=msg) as e:
        load_bundle(bad, cfg)
    assert "\n" not in str(e.value)


def test_bundle_refuses_program_codebook_mismatch(cb_bundle, tmp_path):
    """The program's CB_K must be the declared k (the memory and IR agree with each other)."""
    cfg, path = cb_bundle
    b = load_bundle(path, cfg)
    prog = b.program
    i = next(j for j, x in enumerate(prog) if x.op == Opcode.SET and x.args["reg"] == Reg.CB_K)

    def poke(mem, man):
        word = Insn(Opcode.SET, {"reg": int(Reg.CB_K), "value": 4})
        mem[16 * i: 16 * i + 16] = encode_program([word])

    bad = _rewrite(path, tmp_path / "b", memory=poke)
    with pytest.raises(BundleError, match=r"program's codebook is k=4, d=9"):
        load_bundle(bad, cfg)


def test_bundle_refuses_ir_mismatch(cb_bundle, tmp_path):
    """Memory and manifest agree, but the IR's codebook is another one."""
    import hashlib

    cfg, path = cb_bundle
    g = load_bundle(path, cfg).graph()
    op = g.ops[0]
    fmt = op.weight_format
    cb = fmt.codebook.copy()
    cb[0] = cb[1]
    op.with_codebook(CodebookWeights(fmt.shape, fmt.k, fmt.d, fmt.exp_bits, cb, fmt.indices))

    def edit(man):
        man["ir"]["json_sha256"] = hashlib.sha256(jp.read_bytes()).hexdigest()
        man["ir"]["npz_sha256"] = hashlib.sha256(npz.read_bytes()).hexdigest()

    import shutil
    src = tmp_path / "src"
    shutil.copytree(path, src)
    jp, npz = g.save(src, "ir")
    bad = _rewrite(src, tmp_path / "b", manifest=edit)
    with pytest.raises(BundleError, match="differ from the IR's"):
        load_bundle(bad, cfg)


# ---------------------------------------------------------------- CLI
@pytest.mark.parametrize("extra", [
    ["--weights", "pq", "--k", "16"],
    ["--weights", "kmeans", "--k", "7", "--op", "linear", "--cin", "11"],
    ["--weights", "pq", "--k", "2048", "--d", "18", "--config", "small-k2048"],
])
def test_cli_weights(capsys, extra):
    from shiftbook.cli import main

    args = ["layer", "--cin", "4", "--cout", "5", "--size", "4", "--config", "tiny", "--json",
            *extra]
    rc = main(args)
    rec = json.loads(capsys.readouterr().out)
    assert rc == 0 and rec["bit_exact"]
    assert rec["weights"] == extra[1] and rec["k"] == int(extra[3])
    fp = rec["weight_footprint"]
    assert fp["codebook_bits"] == 8 * rec["k"] * rec["d"]
    assert rec["weight_bytes_read"] >= fp["codebook_bits"] // 8


@pytest.mark.parametrize("extra,msg", [
    (["--weights", "int4"], "unknown --weights 'int4'"),
    (["--k", "4"], "--k/--d need --weights kmeans or pq"),
    (["--weights", "pq", "--k", "512"], "k=512 codewords exceeds max_k=256"),
    (["--weights", "pq", "--d", "5"], "d=5 does not fit the 3x3 kernel layout"),
])
def test_cli_weight_errors(capsys, extra, msg):
    from shiftbook.cli import main

    rc = main(["layer", "--cin", "4", "--cout", "5", "--size", "4", "--config", "tiny",
               *extra])
    err = capsys.readouterr().err
    assert rc == 2 and msg in err and err.count("\n") == 1


def test_mixed_formats_in_one_graph():
    """Layers with their own formats (pq, raw, kmeans, pq again) in one program: each layer
    sets its WFMT and loads its own codebook; functional == golden."""
    from shiftbook.sw.ir import TensorSpec
    from shiftbook.sw.reference import random_codebook

    cfg = PRESETS["small"]
    rng = np.random.default_rng(11)
    g = Graph(inputs=["x"], outputs=["t3"])
    g.add_tensor(TensorSpec("x", (6, 5, 5), 0))
    chans = [6, 9, 4, 10, 5]
    fmts = [("pq", 64, 18), (None, 0, 0), ("kmeans", 8, 1), ("pq", 150, 9)]
    for i, (kind, k, d) in enumerate(fmts):
        cin, cout = chans[i], chans[i + 1]
        codes = np.asarray(nx_encode(rng, (cout, cin, 3, 3), cfg.exp_bits))
        op = Conv2d(f"l{i}", "x" if i == 0 else f"t{i - 1}", f"t{i}", weight=codes,
                    exp_bits=cfg.exp_bits, bias=rng.integers(-50, 50, cout),
                    shift=np.full(cout, 6), relu=i % 2 == 0, padding=(1, 1, 1, 1))
        if kind is not None:
            op.with_codebook(random_codebook(codes, k, d, cfg.exp_bits, rng))
        g.add_tensor(TensorSpec(f"t{i}", (cout, 5, 5), 0))
        g.add_op(op)
    x = rng.integers(-128, 128, (6, 5, 5))
    gold = run_graph(g, {"x": x})
    prog = compile_graph(g, cfg, {"x": x})
    res = run_program(cfg, prog.memory)
    for i in range(4):
        np.testing.assert_array_equal(unpack_tensor(res.memory, prog.tensors[f"t{i}"]),
                                      gold[f"t{i}"])
    assert [lay.weights.wfmt for lay in prog.layers] == [1, 0, 1, 1]
    assert sum(1 for x in prog.insns if x.op == Opcode.LOAD and x.args["buf"] == Buf.CB) == 3


def nx_encode(rng: np.random.Generator, shape: tuple[int, ...], exp_bits: int) -> np.ndarray:
    """Random shift codes with small exponents (zeros included)."""
    from shiftbook import numerics as nx

    e = rng.integers(0, 4, shape)
    sign = rng.integers(0, 2, shape)
    zero = rng.random(shape) < 0.2
    return np.asarray(nx.encode_shift(zero.astype(np.int64), sign, e, exp_bits), np.int64)
