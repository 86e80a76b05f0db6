"""Subcommands of the `shiftbook` CLI (one module each)."""
