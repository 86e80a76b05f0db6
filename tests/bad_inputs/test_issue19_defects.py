"""Issue 19's defects, one test each: sizes past the machine or the configured memory are
refused up front naming the limit; malformed manifests and an empty inputs file get one line."""

from __future__ import annotations

import pytest

from .cases import build_cases
from .runner import make_fixtures, run_case

DEFECTS = {
    # case id -> what the one error line must name
    "option/layer/size-huge": r"external memory",
    "option/layer/size-huge-linear": r"external memory",
    "bundle/layers-not-list/estimate": r"layers",
    "bundle/shape-string/estimate": r"shape",
    "bundle/memory-null/estimate": r"memory",
    "bundle/inputs-empty/estimate": r"inputs",
    "model/truncated.pt2/compile": r"truncated\.pt2",
}


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    return make_fixtures(tmp_path_factory.mktemp("defect-fixtures"))


@pytest.mark.parametrize("case_id", list(DEFECTS))
def test_defect_is_one_clean_line(case_id, fixtures, tmp_path):
    import re

    case = next(c for c in build_cases() if c.id == case_id)
    rec = run_case(case, fixtures, tmp_path)
    assert (rec["outcome"], rec["rc"]) == ("clean", 2), rec
    assert re.search(DEFECTS[case_id], rec["error"]), rec["error"]
    assert rec["seconds"] < 5, f"{case_id} was not refused up front ({rec['seconds']} s)"
    assert not rec["left"], rec["left"]
