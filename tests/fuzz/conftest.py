"""One fixture bundle and model for every fuzz test (compiled once per session)."""

from __future__ import annotations

import pytest

from .targets import make_fixture


@pytest.fixture(scope="session")
def fuzz_fixture(tmp_path_factory):
    return make_fixture(tmp_path_factory.mktemp("fuzz-fixture"))
