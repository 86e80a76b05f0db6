"""The report page in a real browser (Debian's headless chromium): it loads, every image
resolves to a non-empty picture, and nothing is written to the console.

The page's own inline script sets ``data-images-ok`` on <body> at load time once every <img>
has ``naturalWidth > 0``; ``--dump-dom`` gives the DOM after load, and chromium's stderr log
(``--enable-logging=stderr``) carries every console message as a ``:CONSOLE`` line."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch
from torch import nn

from shiftbook.cli import main
from shiftbook.sw.frontend import export_module, save_pt2

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail("chromium is not installed: run `apt-get install -y chromium` (Debian's "
                    "package; `make test` installs it when run as root with apt-get)",
                    pytrace=False)
    return exe


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(2, 4, 3, padding=1)
        self.c2 = nn.Conv2d(4, 6, 1, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c2(torch.relu(self.c1(x)))


def load_page(page: Path, profile: Path) -> tuple[str, str]:
    """(DOM after load, chromium's stderr log) of ``page``."""
    res = subprocess.run([chromium(), *FLAGS, f"--user-data-dir={profile}",
                          "--enable-logging=stderr", "--v=0", "--virtual-time-budget=10000",
                          "--dump-dom", page.resolve().as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    return res.stdout, res.stderr


def test_report_page_loads_with_every_image(tmp_path):
    torch.manual_seed(0)
    pt2 = save_pt2(export_module(Net().eval(), (2, 8, 8)), tmp_path / "net.pt2")
    bundle = tmp_path / "bundle"
    assert main(["compile", str(pt2), "--config", "tiny", "--calib", "2", "-o",
                 str(bundle)]) == 0
    out = tmp_path / "rep"
    assert main(["report", str(bundle), "-o", str(out)]) == 0
    plots = json.loads((out / "report.json").read_text())["plots"]
    dom, log = load_page(out / "report.html", tmp_path / "profile")
    body = re.search(r"<body[^>]*>", dom)
    assert body, dom[:500]
    assert 'data-images-ok="yes"' in body.group(0), body.group(0)
    assert f'data-images="{len(plots)}"' in body.group(0)
    console = [line for line in log.splitlines() if ":CONSOLE" in line]
    assert not console, console


def test_a_broken_image_or_console_error_is_seen(tmp_path):
    """The check itself: a missing image and a console error are both caught."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="missing.svg"><script>'
                    'console.error("boom");window.addEventListener("load",function(){'
                    'document.body.dataset.imagesOk=Array.prototype.every.call('
                    'document.images,function(i){return i.naturalWidth>0})?"yes":"no"});'
                    '</script></body></html>')
    dom, log = load_page(page, tmp_path / "profile")
    assert 'data-images-ok="no"' in dom
    assert any(":CONSOLE" in line and "boom" in line for line in log.splitlines())
