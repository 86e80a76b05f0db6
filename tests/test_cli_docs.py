"""docs/cli.md documents every command and option: its reference section is the argparse text."""

from __future__ import annotations

import re
from pathlib import Path

from shiftbook.cli import COMMANDS, reference_markdown
from shiftbook.cli import DOC_BEGIN as BEGIN
from shiftbook.cli import DOC_END as END

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"


def test_cli_reference_is_current():
    text = DOC.read_text()
    assert BEGIN in text and END in text
    current = text.split(BEGIN, 1)[1].split(END, 1)[0]
    assert current == reference_markdown(), (
        "docs/cli.md's reference is stale: run tools/update_cli_docs.py")


def test_reference_names_every_command_and_option():
    ref = reference_markdown()
    assert re.findall(r"^### `shiftbook (\w+)`", ref, re.M) == COMMANDS
    assert "`-o, --output BUNDLE`" in ref and "`--force`" in ref
