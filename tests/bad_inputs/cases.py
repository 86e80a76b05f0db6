"""The bad-input table: every case is argv plus the files it needs, and each is a bad input.

Placeholders in argv and file names: ``{w}`` the case's own work directory, ``{model}`` a
small valid ``.pt2`` model, ``{bundle}`` a valid bundle compiled from it, ``{cfg}`` a valid
config JSON file (see ``runner.make_fixtures``). A file's content is bytes, text, or a
callable ``f(path, fixtures)`` that writes it. ``expect`` (a regex) must appear in the error
line: the file or option the message has to name.
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Case", "build_cases"]

RANDOM = bytes(np.random.default_rng(21).integers(0, 256, 4096, dtype=np.uint8))
BINARY = b"\xff\xfe\x00\x01\x80\x81garbage\x00" * 8


@dataclass
class Case:
    """One bad input: ``argv`` for ``shiftbook.cli.main`` and what to create first."""

    id: str
    category: str
    argv: list[str]
    files: dict[str, Any] = field(default_factory=dict)
    setup: Callable[[Path, Any], None] | None = None
    env: dict[str, str] = field(default_factory=dict)
    expect: str | None = None


# ------------------------------------------------------------------ helpers
def _npy(a: Any, allow_pickle: bool = False) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=allow_pickle)
    return buf.getvalue()


def _npz(**arrays: Any) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _torch_file(obj_fn: Callable[[], Any]) -> Callable[[Path, Any], None]:
    def write(path: Path, fx: Any) -> None:
        import torch

        torch.save(obj_fn(), path)
    return write


def _damage(data: bytes) -> bytes:
    """``data`` with 64 bytes in its middle inverted."""
    mid = len(data) // 2
    return data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 64]) + data[mid + 64:]


def _user_dir(w: Path, fx: Any) -> None:
    (w / "mine").mkdir()
    (w / "mine" / "notes.txt").write_text("keep me\n")


def _readonly_dir(w: Path, fx: Any) -> None:
    (w / "ro").mkdir()
    os.chmod(w / "ro", 0o555)


def _bundle_copy(mutate: Callable[[dict, Path], Any] | None = None, resign: bool = True,
                 files: Callable[[Path], None] | None = None) -> Callable[[Path, Any], None]:
    """Copy the good bundle to ``{w}/b`` and damage it: ``mutate(manifest, dir)`` edits the
    manifest (re-signed with its digest when ``resign``), ``files(dir)`` edits other files."""
    def setup(w: Path, fx: Any) -> None:
        from shiftbook.sw.bundle import sign_manifest

        b = w / "b"
        shutil.copytree(fx.bundle, b)
        if mutate is not None:
            man = json.loads((b / "manifest.json").read_text())
            out = mutate(man, b)
            man = man if out is None else out
            if resign and isinstance(man, dict):
                sign_manifest(man)
            (b / "manifest.json").write_text(json.dumps(man))
        if files is not None:
            files(b)
    return setup


def _set(key: str, value: Any) -> Callable[[dict, Path], None]:
    def f(m: dict, b: Path) -> None:
        m[key] = value
    return f


def _drop(key: str) -> Callable[[dict, Path], None]:
    def f(m: dict, b: Path) -> None:
        m.pop(key, None)
    return f


def _layer(key: str, value: Any = None, drop: bool = False) -> Callable[[dict, Path], None]:
    def f(m: dict, b: Path) -> None:
        if drop:
            m["layers"][0].pop(key, None)
        else:
            m["layers"][0][key] = value
    return f


def _tensor(key: str, value: Any) -> Callable[[dict, Path], None]:
    def f(m: dict, b: Path) -> None:
        m["tensors"][0][key] = value
    return f


# ------------------------------------------------------------------ config files
BAD_CONFIGS: dict[str, Any] = {
    "notjson": "{rows: 4,",
    "binary": BINARY,
    "random": RANDOM,
    "utf16": '{"rows": 4}'.encode("utf-16"),
    "empty": b"",
    "list": "[]",
    "string": '"tiny"',
    "unknown-key": '{"rowz": 4}',
    "rows-0": '{"rows": 0}',
    "rows-1000": '{"rows": 1000}',
    "rows-str": '{"rows": "4"}',
    "rows-float": '{"rows": 4.5}',
    "rows-bool": '{"rows": true}',
    "rows-null": '{"rows": null}',
    "acc-8": '{"acc_bits": 8}',
    "acc-64": '{"acc_bits": 64}',
    "exp-0": '{"exp_bits": 0}',
    "exp-acc16": '{"acc_bits": 16, "exp_bits": 4}',
    "bus-3": '{"bus_bytes": 3}',
    "memwords-1000": '{"mem_words": 1000}',
    "abuf-100": '{"abuf_bytes": 100}',
    "maxk-3": '{"max_k": 3}',
    "maxd-0": '{"max_d": 0}',
    "pe-magic": '{"pe": "magic"}',
    "nan": '{"rows": NaN}',
}


def _config_cases() -> list[Case]:
    out = []
    for name, content in BAD_CONFIGS.items():
        f = {f"{name}.json": content}
        path = f"{{w}}/{name}.json"
        exp = rf"{name}\.json"
        out += [
            Case(f"config/{name}/compile", "config",
                 ["compile", "{model}", "--config", path, "--calib", "1", "-o", "{w}/out"],
                 f, expect=exp),
            Case(f"config/{name}/verilog", "config", ["verilog", "--config", path, "-o",
                                                      "{w}/v"], f, expect=exp),
            Case(f"config/{name}/layer", "config",
                 ["layer", "--config", path, "--size", "4", "--cin", "2", "--cout", "2",
                  "--level", "golden"], f, expect=exp),
        ]
    for name in ("binary", "rows-0", "unknown-key", "utf16"):
        path = f"{{w}}/{name}.json"
        f = {f"{name}.json": BAD_CONFIGS[name]}
        out += [
            Case(f"config/{name}/compress", "config",
                 ["compress", "resnet8", "--method", "pq", "--config", path, "-o",
                  "{w}/c.pt", "--quiet"], f),
            Case(f"config/{name}/build", "config",
                 ["build", "--board", "icebreaker", "--config", path, "--verilog-only", "-o",
                  "{w}/bv"], f),
            Case(f"config/{name}/verilog-board", "config",
                 ["verilog", "--board", "icebreaker", "--config", path, "-o", "{w}/bv"], f),
        ]
    out += [
        Case("config/missing/compile", "config",
             ["compile", "{model}", "--config", "{w}/nosuch.json", "-o", "{w}/out"],
             expect="nosuch.json"),
        Case("config/directory/verilog", "config",
             ["verilog", "--config", "{w}", "-o", "{w}/v"]),
        Case("config/preset-typo/layer", "config",
             ["layer", "--config", "smal", "--size", "4", "--level", "golden"], expect="smal"),
    ]
    return out


# ------------------------------------------------------------------ models and checkpoints
def _model_cases() -> list[Case]:
    def state(name: str, sd: Any) -> Callable[[Path, Any], None]:
        return _torch_file(lambda: {"model": name, "state_dict": sd() if callable(sd) else sd})

    def wrong_keys() -> Any:
        import torch

        return {"conv9.weight": torch.zeros(3)}

    def wrong_shape() -> Any:
        from shiftbook.sw.models import build_model

        sd = build_model("resnet8", seed=0, num_classes=10, in_channels=1).state_dict()
        k = next(iter(sd))
        sd[k] = sd[k][:1]
        return sd

    files: dict[str, Any] = {
        "random.pt": RANDOM, "empty.pt": b"", "text.pt": "hello\n", "random.pt2": RANDOM,
        "empty.pt2": b"", "zipnot.pt2": b"PK\x03\x04" + RANDOM[:100],
        "wrongkeys.pt": state("resnet8", wrong_keys), "unknown.pt": state("resnet99", {}),
        "wrongshape.pt": state("resnet8", wrong_shape),
        "list.pt": _torch_file(lambda: [1, 2, 3]),
        "nostate.pt": _torch_file(lambda: {"model": "resnet8"}),
        "random.npy": RANDOM,
        # a real archive cut short or with a damaged run of bytes (torch logs a traceback and
        # raises "check the warnings above": only shiftbook's line may show)
        "truncated.pt2": lambda p, fx: p.write_bytes(fx.model.read_bytes()[:-200]),
        "damaged.pt2": lambda p, fx: p.write_bytes(_damage(fx.model.read_bytes())),
    }
    out = []
    for fname, content in files.items():
        out.append(Case(f"model/{fname}/compile", "model",
                        ["compile", f"{{w}}/{fname}", "--calib", "1", "-o", "{w}/out"],
                        {fname: content}, expect=fname.replace(".", r"\.")))
    for fname in ("random.pt", "empty.pt", "wrongkeys.pt", "wrongshape.pt", "list.pt",
                  "text.pt", "unknown.pt"):
        out.append(Case(f"model/{fname}/compile-weights", "model",
                        ["compile", "resnet8", "--weights", f"{{w}}/{fname}", "--calib", "1",
                         "-o", "{w}/out"], {fname: files[fname]}, expect=fname.replace(".", r"\.")))
        out.append(Case(f"model/{fname}/compress", "model",
                        ["compress", f"{{w}}/{fname}", "--method", "pq", "-o", "{w}/c.pt",
                         "--quiet"], {fname: files[fname]}, expect=fname.replace(".", r"\.")))
    for fname in ("random.pt", "wrongkeys.pt", "empty.pt"):
        out.append(Case(f"model/{fname}/compress-weights", "model",
                        ["compress", "resnet8", "--weights", f"{{w}}/{fname}", "--method", "pq",
                         "-o", "{w}/c.pt", "--quiet"], {fname: files[fname]},
                        expect=fname.replace(".", r"\.")))
    out += [
        Case("model/unknown-name/compile", "model", ["compile", "resnet7", "-o", "{w}/out"],
             expect="resnet7"),
        Case("model/missing-pt2/compile", "model", ["compile", "{w}/no.pt2", "-o", "{w}/out"],
             expect=r"no\.pt2"),
        Case("model/directory/compile", "model", ["compile", "{w}", "-o", "{w}/out"]),
        Case("model/unknown-name/compress", "model",
             ["compress", "resnet7", "--method", "pq", "-o", "{w}/c.pt"], expect="resnet7"),
    ]
    return out


# ------------------------------------------------------------------ command options
def _option_cases() -> list[Case]:
    L = ["layer", "--size", "4", "--cin", "2", "--cout", "2", "--level", "golden",
         "--config", "tiny"]
    C = ["compile", "{model}", "--calib", "1", "-o", "{w}/out", "--config", "tiny"]
    P = ["compress", "resnet8", "--method", "pq", "-o", "{w}/c.pt", "--quiet"]
    S = ["simulate", "{bundle}", "--level", "golden"]
    E = ["estimate", "{bundle}"]
    R = ["run", "{bundle}", "--port", "{w}/noport"]
    table: list[tuple[str, list[str]]] = [
        ("layer/op", L + ["--op", "deconv"]), ("layer/cin-0", L + ["--cin", "0"]),
        ("layer/cin-neg", L + ["--cin", "-1"]), ("layer/cout-0", L + ["--cout", "0"]),
        ("layer/kernel-0", L + ["--kernel", "0"]),
        ("layer/kernel-big", L + ["--kernel", "9", "--padding", "0"]),
        ("layer/stride-0", L + ["--stride", "0"]), ("layer/padding-neg", L + ["--padding", "-1"]),
        ("layer/size-0", L + ["--size", "0"]), ("layer/size-huge", L + ["--size", "100000"]),
        ("layer/size-huge-linear", L + ["--op", "linear", "--cin", "100000000"]),
        ("layer/level", L + ["--level", "gate"]), ("layer/wdist", L + ["--weights-dist", "x"]),
        ("layer/weights", L + ["--weights", "int4"]), ("layer/k-0", L + ["--weights", "kmeans",
                                                                          "--k", "0"]),
        ("layer/k-huge", L + ["--weights", "kmeans", "--k", "100000"]),
        ("layer/d-0", L + ["--weights", "pq", "--d", "0"]),
        ("layer/k-for-shift", L + ["--k", "16"]),
        ("layer/d-for-kmeans", L + ["--weights", "kmeans", "--d", "4"]),
        ("layer/idist", L + ["--input-dist", "x"]), ("layer/residual", L + ["--residual",
                                                                            "--cout", "3"]),
        ("layer/residual-stride", L + ["--residual", "--stride", "2"]),
        ("layer/seed-neg", L + ["--seed", "-1"]), ("layer/cin-str", L + ["--cin", "two"]),
        ("layer/unknown-option", L + ["--colour"]),
        ("compile/calib-0", C + ["--calib", "0"]), ("compile/calib-neg", C + ["--calib", "-3"]),
        ("compile/calib-str", C + ["--calib", "many"]),
        ("compile/seed-neg", C + ["--seed", "-1"]),
        ("compile/weights-pt2", C + ["--weights", "{w}/x.pt"]),
        ("compile/adapt-neg", C + ["--max-adapt-error", "-1"]),
        ("compile/adapt-nan", C + ["--max-adapt-error", "nan"]),
        ("compile/adapt-str", C + ["--max-adapt-error", "lots"]),
        ("compile/no-output", ["compile", "{model}"]),
        ("compress/method", P[:3] + ["quantum"] + P[4:]),
        ("compress/k-0", P + ["--k", "0"]), ("compress/d-0", P + ["--d", "0"]),
        ("compress/k-shift", ["compress", "resnet8", "--method", "deepshift-q", "--k", "16",
                              "-o", "{w}/c.pt"]),
        ("compress/ratio-neg", P + ["--ratio", "-1"]),
        ("compress/ratio-nan", P + ["--ratio", "nan"]),
        ("compress/epochs-neg", P + ["--epochs", "-1"]),
        ("compress/baseline-neg", P + ["--baseline-epochs", "-2"]),
        ("compress/data", P + ["--data", "cifar"]), ("compress/preset", P + ["--preset", "huge"]),
        ("compress/rounding", P + ["--rounding", "ceil", "--method", "deepshift-q"]),
        ("compress/exp-0", P + ["--exp-bits", "0"]), ("compress/exp-9", P + ["--exp-bits", "9"]),
        ("compress/save-float-weights", P + ["--weights", "{w}/x.pt", "--save-float",
                                             "{w}/f.pt"]),
        ("compress/seed-neg", P + ["--seed", "-4"]),
        ("compress/k-huge", P + ["--k", "1000000"]),
        ("simulate/level", S[:2] + ["--level", "gate"]),
        ("simulate/timeout-neg", S + ["--timeout-cycles", "-5"]),
        ("simulate/seed-neg", S + ["--seed", "-1"]),
        ("simulate/seed-and-input", S + ["--seed", "1", "--input", "{w}/x.npy"]),
        ("simulate/no-bundle", ["simulate", "{w}/nobundle"]),
        ("simulate/bundle-file", ["simulate", "{w}/x.npy"]),
        ("estimate/stall-neg", E + ["--stall-pct", "-1"]),
        ("estimate/stall-100", E + ["--stall-pct", "100"]),
        ("estimate/stall-str", E + ["--stall-pct", "half"]),
        ("estimate/seed-0", E + ["--stall-seed", "0", "--stall-pct", "5"]),
        ("estimate/seed-big", E + ["--stall-seed", str(2**32), "--stall-pct", "5"]),
        ("estimate/no-bundle", ["estimate", "{w}/nobundle"]),
        ("run/baud-0", R + ["--baud", "0"]), ("run/baud-neg", R + ["--baud", "-9600"]),
        ("run/timeout-neg", R + ["--timeout", "-1"]), ("run/timeout-nan", R + ["--timeout", "nan"]),
        ("run/no-port", R), ("run/port-file", ["run", "{bundle}", "--port", "{w}/x.npy"]),
        ("run/no-bundle", ["run", "{w}/nobundle", "--port", "{w}/noport"]),
        ("build/board", ["build", "--board", "de0", "-o", "{w}/b"]),
        ("build/arty", ["build", "--board", "arty-a7", "-o", "{w}/b"]),
        ("build/icebreaker-small", ["build", "--board", "icebreaker", "--config", "small",
                                    "-o", "{w}/b"]),
        ("verilog/board", ["verilog", "--board", "de0", "-o", "{w}/v"]),
        ("verilog/no-output", ["verilog"]),
        ("report/no-bundle", ["report", "{w}/nobundle", "-o", "{w}/r"]),
        ("cli/unknown-command", ["synthesize"]),
    ]
    files = {"x.npy": _npy(np.zeros((2, 8, 8), np.int8)), "x.pt": b"x"}
    return [Case(f"option/{name}", "option", argv, dict(files)) for name, argv in table]


# ------------------------------------------------------------------ simulate inputs
def _input_cases() -> list[Case]:
    shape = (2, 8, 8)     # the fixture model's input (runner.MODEL_SHAPE)
    nan = np.zeros(shape, np.float32)
    nan[1, 2, 3] = np.nan
    inf = np.zeros(shape)
    inf[0, 0, 0] = np.inf
    files: dict[str, Any] = {
        "random.npy": RANDOM, "empty.npy": b"", "text.npy": "1 2 3\n",
        "pickled.npy": _npy(np.array([{"a": 1}, None], dtype=object), allow_pickle=True),
        "archive.npz": _npz(x=np.zeros(shape, np.int8)), "garbage.npz": b"PK\x03\x04" + RANDOM,
        "shape.npy": _npy(np.zeros((3, 8, 8), np.int8)), "batch2.npy": _npy(np.zeros((2, *shape))),
        "flat.npy": _npy(np.zeros(128, np.int8)), "scalar.npy": _npy(np.int8(3)),
        "nan.npy": _npy(nan), "inf.npy": _npy(inf),
        "complex.npy": _npy(np.zeros(shape, np.complex64)),
        "strings.npy": _npy(np.full(shape, "a")), "bool.npy": _npy(np.zeros(shape, bool)),
        "int-range.npy": _npy(np.full(shape, 300, np.int16)),
        "truncated.npy": _npy(np.zeros(shape, np.int8))[:100],
    }
    out = [Case(f"input/{name}", "input",
                ["simulate", "{bundle}", "--level", "golden", "--input", f"{{w}}/{name}"],
                {name: content}, expect=name.replace(".", r"\."))
           for name, content in files.items()]
    out.append(Case("input/directory", "input",
                    ["simulate", "{bundle}", "--level", "golden", "--input", "{w}"]))
    out.append(Case("input/missing", "input",
                    ["simulate", "{bundle}", "--level", "golden", "--input", "{w}/no.npy"],
                    expect=r"no\.npy"))
    return out


# ------------------------------------------------------------------ bundles
def _bundle_cases() -> list[Case]:
    def truncate_memory(b: Path) -> None:
        data = (b / "memory.bin").read_bytes()
        (b / "memory.bin").write_bytes(data[: len(data) // 2])

    def garbage_npz(b: Path) -> None:
        (b / "ir.npz").write_bytes(RANDOM)

    def rm(name: str) -> Callable[[Path], None]:
        return lambda b: (b / name).unlink()

    def other_config(m: dict, b: Path) -> None:
        from shiftbook.config import PRESETS

        m["config"] = PRESETS["base"].to_dict()
        m["config_hash"] = PRESETS["base"].hash

    def memory_grows(m: dict, b: Path) -> None:
        m["memory"]["bytes"] = m["memory"]["bytes"] * 2

    variants: dict[str, Callable[[Path, Any], None]] = {
        "layers-not-list": _bundle_copy(_set("layers", {"a": 1})),
        "layers-empty": _bundle_copy(_set("layers", [])),
        "layers-null": _bundle_copy(_set("layers", None)),
        "layer-missing-macs": _bundle_copy(_layer("macs", drop=True)),
        "layer-macs-str": _bundle_copy(_layer("macs", "many")),
        "layer-unknown-key": _bundle_copy(_layer("colour", 1)),
        "layer-not-object": _bundle_copy(_set("layers", [3])),
        "layer-addr-neg": _bundle_copy(_layer("weight_addr", -8)),
        "layer-tiles-null": _bundle_copy(_layer("tiles", None)),
        "shape-string": _bundle_copy(_tensor("shape", "2x8x8")),
        "shape-short": _bundle_copy(_tensor("shape", [2, 8])),
        "tensor-addr-huge": _bundle_copy(_tensor("addr", 2**40)),
        "tensors-not-list": _bundle_copy(_set("tensors", "x")),
        "memory-null": _bundle_copy(_set("memory", None)),
        "memory-bytes-grows": _bundle_copy(memory_grows),
        "program-null": _bundle_copy(_set("program", None)),
        "config-null": _bundle_copy(_set("config", None)),
        "config-bad-field": _bundle_copy(_set("config", {"rows": 0})),
        "config-other-preset": _bundle_copy(other_config),
        "config-hash-wrong": _bundle_copy(_set("config_hash", "0" * 16)),
        "inputs-empty": _bundle_copy(_set("inputs", [])),
        "inputs-unknown": _bundle_copy(_set("inputs", ["nosuch"])),
        "outputs-empty": _bundle_copy(_set("outputs", [])),
        "inputs-string": _bundle_copy(_set("inputs", "x")),
        "ir-null": _bundle_copy(_set("ir", None)),
        "version-9": _bundle_copy(_set("version", 9)),
        "missing-layers": _bundle_copy(_drop("layers")),
        "missing-tensors": _bundle_copy(_drop("tensors")),
        "missing-memory": _bundle_copy(_drop("memory")),
        "missing-config": _bundle_copy(_drop("config")),
        "missing-digest": _bundle_copy(_drop("manifest_sha256"), resign=False),
        "wrong-digest": _bundle_copy(_set("ideal_cycles", 1), resign=False),
        "manifest-list": _bundle_copy(lambda m, b: [m], resign=False),
        "manifest-notjson": _bundle_copy(files=lambda b: (b / "manifest.json").write_text("{")),
        "manifest-binary": _bundle_copy(files=lambda b: (b / "manifest.json").write_bytes(BINARY)),
        "manifest-missing": _bundle_copy(files=rm("manifest.json")),
        "memory-truncated": _bundle_copy(files=truncate_memory),
        "memory-missing": _bundle_copy(files=rm("memory.bin")),
        "ir-npz-garbage": _bundle_copy(files=garbage_npz),
        "ir-json-missing": _bundle_copy(files=rm("ir.json")),
    }
    out = []
    for name, setup in variants.items():
        out += [
            Case(f"bundle/{name}/simulate", "bundle", ["simulate", "{w}/b", "--level", "golden"],
                 setup=setup),
            Case(f"bundle/{name}/estimate", "bundle", ["estimate", "{w}/b"], setup=setup),
        ]
    for name in ("layers-not-list", "shape-string", "memory-null", "layer-missing-macs",
                 "memory-truncated", "wrong-digest", "manifest-binary", "inputs-empty"):
        out += [
            Case(f"bundle/{name}/report", "bundle", ["report", "{w}/b", "-o", "{w}/r"],
                 setup=variants[name]),
            Case(f"bundle/{name}/functional", "bundle",
                 ["simulate", "{w}/b", "--level", "functional"], setup=variants[name]),
            Case(f"bundle/{name}/run", "bundle", ["run", "{w}/b", "--port", "{w}/noport"],
                 setup=variants[name]),
        ]
    return out


# ------------------------------------------------------------------ report energy tables
def _energy_cases() -> list[Case]:
    tables = {"missing": None, "binary.yaml": BINARY, "notyaml.yaml": "a: [1, 2\n",
              "list.yaml": "- 1\n- 2\n", "unknown.yaml": "warp_drive_pj: 3\n",
              "negative.yaml": None, "string.yaml": None}
    out = []
    for name, content in tables.items():
        files = {name: content} if content is not None else {}
        out.append(Case(f"energy/{name}", "energy",
                        ["report", "{bundle}", "-o", "{w}/r", "--energy-table", f"{{w}}/{name}"],
                        files, setup=_energy_setup(name), expect=name.replace(".", r"\.")))
    return out


def _energy_setup(name: str) -> Callable[[Path, Any], None] | None:
    if name not in ("negative.yaml", "string.yaml"):
        return None

    def setup(w: Path, fx: Any) -> None:
        from shiftbook.sw.estimate import energy

        key = next(iter(getattr(energy, "DEFAULT_TABLE", {"add_pj": 0})))
        value = "-1.0" if name == "negative.yaml" else "lots"
        (w / name).write_text(f"{key}: {value}\n")
    return setup


# ------------------------------------------------------------------ output paths
def _output_cases() -> list[Case]:
    outs = {"user-file": ("{w}/f.txt", None), "user-dir": ("{w}/mine", _user_dir),
            "under-file": ("{w}/f.txt/sub", None)}
    if os.geteuid() != 0:       # root writes into read-only directories anyway
        outs["readonly"] = ("{w}/ro/out", _readonly_dir)
    out = []
    for name, (path, setup) in outs.items():
        f = {"f.txt": "user data\n"}
        out += [
            Case(f"output/{name}/compile", "output",
                 ["compile", "{model}", "--calib", "1", "--config", "tiny", "-o", path], f,
                 setup),
            Case(f"output/{name}/layer", "output",
                 ["layer", "--size", "4", "--cin", "2", "--cout", "2", "--level", "golden",
                  "--config", "tiny", "-o", path], f, setup),
            Case(f"output/{name}/report", "output", ["report", "{bundle}", "-o", path], f, setup),
            Case(f"output/{name}/compress", "output",
                 ["compress", "resnet8", "--method", "pq", "-o", path, "--quiet"], f, setup),
            Case(f"output/{name}/compress-json", "output",
                 ["compress", "resnet8", "--method", "pq", "-o", "{w}/c.pt", "--json", path,
                  "--quiet"], f, setup),
        ]
        if name != "user-dir":  # these write into an existing directory (no replacing)
            out += [
                Case(f"output/{name}/simulate-dump", "output",
                     ["simulate", "{bundle}", "--level", "golden", "--dump-dir", path], f,
                     setup),
                Case(f"output/{name}/run", "output",
                     ["run", "{bundle}", "--port", "{w}/noport", "-o", path], f, setup),
                Case(f"output/{name}/verilog", "output",
                     ["verilog", "--config", "tiny", "-o", path], f, setup),
                Case(f"output/{name}/build", "output",
                     ["build", "--board", "icebreaker", "--verilog-only", "-o", path], f, setup),
            ]
    return out


# ------------------------------------------------------------------ tool set-ups
def _tool_cases() -> list[Case]:
    nopath = {"PATH": "{w}/empty-bin"}
    return [
        Case("tools/no-path/simulate-rtl", "tools", ["simulate", "{bundle}", "--level", "rtl"],
             setup=lambda w, fx: (w / "empty-bin").mkdir(), env=nopath),
        Case("tools/no-path/layer-rtl", "tools",
             ["layer", "--size", "4", "--cin", "2", "--cout", "2", "--level", "rtl", "--config",
              "tiny"], setup=lambda w, fx: (w / "empty-bin").mkdir(), env=nopath),
        Case("tools/no-path/estimate-validate", "tools", ["estimate", "{bundle}", "--validate"],
             setup=lambda w, fx: (w / "empty-bin").mkdir(), env=nopath),
    ]


def build_cases() -> list[Case]:
    """Every case, in a stable order; ids are unique."""
    cases = (_config_cases() + _model_cases() + _option_cases() + _input_cases()
             + _bundle_cases() + _energy_cases() + _output_cases() + _tool_cases())
    ids = [c.id for c in cases]
    assert len(ids) == len(set(ids)), "duplicate case ids"
    return cases
