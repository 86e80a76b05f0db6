"""`shiftbook report`: HTML + SVG + JSON on a small compiled network; figures consistent with
the cycle model and the energy model; the optional RTL run, build and compression inputs;
atomic; one-line errors with nothing written. (The page in a real browser:
tests/test_report_browser.py.)"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from shiftbook.cli import main
from shiftbook.outputs import MARKER
from shiftbook.sw.bundle import load_bundle
from shiftbook.sw.estimate.energy import events_from_bundle, load_table, network_energy
from shiftbook.sw.frontend import export_module, save_pt2
from shiftbook.timing import estimate

PLOTS = {"cycles.svg", "utilization.svg", "energy_breakdown.svg", "energy_layers.svg",
         "memory.svg", "roofline.svg"}


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 4, 3, padding=1)
        self.c3 = nn.Conv2d(4, 6, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.c1(x))
        y = torch.relu(self.c2(y) + y)
        return self.c3(y)


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("rep")
    torch.manual_seed(0)
    pt2 = save_pt2(export_module(Net().eval(), (2, 8, 8)), d / "net.pt2")
    out = d / "bundle"
    assert main(["compile", str(pt2), "--config", "tiny", "--calib", "2", "-o", str(out)]) == 0
    return out


@pytest.fixture(scope="module")
def report(bundle, tmp_path_factory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("out") / "rep"
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["report", str(bundle), "-o", str(out)]) == 0
    return out, buf.getvalue()


def test_files_and_svgs(report):
    out, _ = report
    rec = json.loads((out / "report.json").read_text())
    names = {p["file"] for p in rec["plots"]}
    assert names == PLOTS
    page = (out / "report.html").read_text()
    assert "<pre>" not in page and "None" not in page
    for n in names:
        text = (out / n).read_text()
        assert text.lstrip().startswith("<?xml") and "<svg" in text
        w = re.search(r'<svg[^>]* width="([0-9.]+)pt"', text)
        assert w and float(w.group(1)) > 700          # a wide figure, shown at 100% width
        assert f'src="{n}"' in page
    assert sorted(p.name for p in out.iterdir()) == sorted(names | {"report.json", MARKER,
                                                                    "report.html"})
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]


def test_json_matches_models(report, bundle):
    out, text = report
    rec = json.loads((out / "report.json").read_text())
    b = load_bundle(bundle)
    est = estimate(b)
    c = rec["cycles"]
    assert c["total"] == est.total > sum(lay["model"] for lay in c["layers"]) == est.marks[-1][1]
    assert [lay["model"] for lay in c["layers"]] == [lc.cycles for lc in est.layers]
    assert [lay["name"] for lay in c["layers"]] == ["c1", "c2", "c3"]
    assert c["ideal"] == b.ideal_cycles == sum(math.ceil(m / 4) for m in
                                                (4 * 64 * 18, 4 * 64 * 36, 6 * 16 * 4))
    assert c["utilization"] == round(c["ideal"] / c["total"], 4) and 0 < c["utilization"] <= 1
    en = network_energy(events_from_bundle(b), load_table())
    e = rec["energy"]
    for d in ("shiftbook", "int8", "fp32"):
        assert e["totals"][d] == pytest.approx(en.totals[d])
        assert sum(sum(lay[d].values()) for lay in e["layers"]) == pytest.approx(en.totals[d])
        assert sum(e["breakdown"][d].values()) == pytest.approx(en.totals[d])
    assert e["ratios_vs_shiftbook"]["fp32"] > e["ratios_vs_shiftbook"]["int8"] > 1
    wl = rec["weights"]["layers"]
    assert [w["weight_bytes"] for w in wl] == [lay.weight_bytes for lay in b.layers]
    assert all(w["weight_bytes"] > 0 for w in wl)
    assert [w["format"] for w in wl] == ["raw shift codes"] * 3
    rows = rec["layers"]
    assert [r["model_cycles"] for r in rows] == [lc.cycles for lc in est.layers]
    assert [r["bits_per_weight"] for r in rows] == [8.0] * 3       # one byte per raw code
    assert all(r["rtl_cycles"] is None and r["bit_exact"] is None for r in rows)
    assert rows[0]["memory"]["dram"]["weight_bytes"] > 0
    assert rec["memory"]["dram"]["act_bytes"] == sum(r["memory"]["dram"]["act_bytes"]
                                                     for r in rows)
    roof = rec["roofline"]
    assert roof["peak_ops_per_cycle"] == b.config.rows * b.config.cols
    assert roof["bandwidth_bytes_per_cycle"] == b.config.bus_bytes
    for lay in roof["layers"]:
        assert lay["memory_bound"] == (lay["ops_per_byte"] < roof["ridge_ops_per_byte"])
    ex = rec["energy_explained"]
    share = ex["share_shiftbook"]
    assert sum(share.values()) == pytest.approx(1.0)
    dram = round(100 * share["dram"])
    assert any(f"is {dram}% of shiftbook's energy" in t and
               f"{e['ratios_vs_shiftbook']['int8']:.2f}x in total" in t
               for t in ex["sentences"])
    assert ex["ratios_by_source"]["int8"]["arith"] > e["ratios_vs_shiftbook"]["int8"]
    assert f"total cycles {est.total} " in text and "fp32" in text and "x shiftbook" in text


def test_energy_table_override(bundle, tmp_path, capsys):
    yml = tmp_path / "t.yaml"
    base = load_table()
    yml.write_text("dram_64b: %r\n" % (2 * base.data["dram_64b"]))
    assert main(["report", str(bundle), "-o", str(tmp_path / "r"), "--energy-table",
                 str(yml)]) == 0
    rec = json.loads((tmp_path / "r" / "report.json").read_text())
    en = network_energy(events_from_bundle(load_bundle(bundle)), load_table())
    dram = en.breakdown("shiftbook")["dram"]
    assert rec["energy"]["breakdown"]["shiftbook"]["dram"] == pytest.approx(2 * dram)


def test_errors_write_nothing(bundle, tmp_path, capsys):
    out = tmp_path / "r"
    assert main(["report", str(tmp_path / "nope"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and err.strip().count("\n") == 0
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in bundle.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    mem = bytearray((bad / "memory.bin").read_bytes())
    mem[len(mem) // 2] ^= 0xFF
    (bad / "memory.bin").write_bytes(bytes(mem))
    assert main(["report", str(bad), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.strip() and err.strip().count("\n") == 0
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["bad"]


def test_replaces_only_its_own_report(bundle, tmp_path, capsys):
    out = tmp_path / "r"
    out.mkdir()
    (out / "notes.txt").write_text("x")
    assert main(["report", str(bundle), "-o", str(out)]) == 2      # a user's directory: kept
    assert "holds files shiftbook did not write" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "x"
    assert main(["report", str(bundle), "-o", str(out), "--force"]) == 0
    assert not (out / "notes.txt").exists() and (out / "report.json").exists()
    assert main(["report", str(bundle), "-o", str(out)]) == 0      # a report: replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r"]


def test_json_flag_prints_the_record(bundle, tmp_path, capsys):
    out = tmp_path / "rj"
    assert main(["report", str(bundle), "-o", str(out), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((out / "report.json").read_text())


def _fake_rtl(bundle: Path, tmp_path: Path, *, exact: bool = True) -> Path:
    """A `simulate --level rtl --json` record: the functional record's format, level rtl."""
    import io
    from contextlib import redirect_stdout

    buf = io.StringIO()
    with redirect_stdout(buf):
        main(["simulate", str(bundle), "--level", "functional", "--json"])
    rec = json.loads(buf.getvalue())
    rec.update(level="rtl", cycles_source="rtl")
    if not exact:
        rec["bit_exact"] = rec["layers"][1]["bit_exact"] = False
    p = tmp_path / "rtl.json"
    p.write_text(json.dumps(rec))
    return p


def test_rtl_build_and_compression_inputs(bundle, tmp_path, capsys):
    run = _fake_rtl(bundle, tmp_path, exact=False)
    bdir = tmp_path / "build"
    bdir.mkdir()
    (bdir / "report.json").write_text(json.dumps({
        "board": "icebreaker", "device": "iCE40UP5K", "family": "ice40", "config": "tiny",
        "resources": {"lut": {"used": 4000, "available": 5280}}, "clk_mhz": 12.0,
        "fmax_mhz": 20.5, "timing_met": True, "bitstream": "x.bin", "seconds": 60.0}))
    comp = tmp_path / "c.json"
    comp.write_text(json.dumps({"method": "kmeans", "ratio": 7.7, "hw_ratio": 7.5,
                                "paper_bytes": 100.0, "hw_bytes": 104, "float_acc": 98.9,
                                "acc": 98.3, "layers": [{"layer": "c1", "format": "codebook",
                                                         "weights": 72,
                                                         "bits_per_weight": 4.2,
                                                         "hw_bytes": 40}]}))
    out = tmp_path / "r"
    assert main(["report", str(bundle), "-o", str(out), "--run", str(run), "--build",
                 str(bdir), "--compression", str(comp)]) == 0
    rec = json.loads((out / "report.json").read_text())
    est = estimate(load_bundle(bundle))
    assert [r["rtl_cycles"] for r in rec["layers"]] == [lc.cycles for lc in est.layers]
    assert [r["bit_exact"] for r in rec["layers"]] == [True, False, True]
    assert rec["rtl"]["bit_exact"] is False and rec["build"]["fmax_mhz"] == 20.5
    assert rec["compression"]["acc"] == 98.3
    page = (out / "report.html").read_text()
    for text in ("RTL cycles", "Fmax 20.50 MHz", "4000", "98.30%", "NO"):
        assert text in page
    # a board run's run.json (cumulative cycles per MARK): RTL cycles, bit-exact not checked
    marks, at = [], 0
    for i, lc in enumerate(est.layers):
        at += lc.cycles
        marks.append({"id": i, "cycles": at})
    rdir = tmp_path / "board"
    rdir.mkdir()
    (rdir / "run.json").write_text(json.dumps({"cycles": est.total, "marks": marks}))
    assert main(["report", str(bundle), "-o", str(out), "--run", str(rdir)]) == 0
    rec = json.loads((out / "report.json").read_text())
    assert [r["rtl_cycles"] for r in rec["layers"]] == [lc.cycles for lc in est.layers]
    assert rec["rtl"]["bit_exact"] is None
    capsys.readouterr()


def test_bad_optional_inputs_are_one_line(bundle, tmp_path, capsys):
    out = tmp_path / "r"
    func = _fake_rtl(bundle, tmp_path)
    rec = json.loads(func.read_text())
    rec["level"] = "functional"
    func.write_text(json.dumps(rec))
    cases = [(["--run", str(func)], "takes an RTL run"),
             (["--run", str(tmp_path / "none.json")], "no such file"),
             (["--build", str(tmp_path)], "no such file"),
             (["--compression", str(func)], "not a `shiftbook compress --json` summary")]
    for extra, msg in cases:
        assert main(["report", str(bundle), "-o", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert msg in err and err.strip().count("\n") == 0, err
    assert not out.exists()
