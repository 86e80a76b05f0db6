"""`shiftbook report`: HTML + PNG + JSON on a small compiled network; figures consistent with
the cycle model and the energy model; atomic; one-line errors with nothing written."""

from __future__ import annotations

import json
import math
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

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


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


def test_files_and_pngs(report):
    out, _ = report
    rec = json.loads((out / "report.json").read_text())
    names = {p["file"] for p in rec["plots"]}
    assert names == {"cycles.png", "utilization.png", "energy_breakdown.png",
                     "energy_layers.png", "weights.png"}
    page = (out / "report.html").read_text()
    for n in names:
        data = (out / n).read_bytes()
        assert data[:8] == PNG_MAGIC and data[12:16] == b"IHDR"
        w, h = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
        assert 100 < w < 5000 and 100 < h < 5000
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
