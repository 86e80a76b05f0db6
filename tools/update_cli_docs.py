"""Rewrite the generated reference section of docs/cli.md from the argparse definitions."""

from __future__ import annotations

from pathlib import Path

from shiftbook.cli import DOC_BEGIN as BEGIN
from shiftbook.cli import DOC_END as END
from shiftbook.cli import reference_markdown

DOC = Path(__file__).resolve().parents[1] / "docs" / "cli.md"

if __name__ == "__main__":
    text = DOC.read_text()
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + BEGIN + reference_markdown() + END + tail)
    print(f"updated {DOC}")
