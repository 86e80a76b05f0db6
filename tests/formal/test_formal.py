"""Formal proofs of the datapath blocks (docs/formal.md), each with a mutation that must fail.

Each case runs SymbiYosys (YoWASP) with Yices on a test-only wrapper; the depths are small so
the whole set stays well under a few minutes. Run times land in ``bench/out/formal_times.json``
and in pytest's terminal summary (tests/formal/conftest.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from .sby import prove, tools_missing
from .wrappers_cbfetch import FetchSpec
from .wrappers_controller import ControllerSpec
from .wrappers_decoder import DecoderSpec
from .wrappers_pe import PESpec
from .wrappers_uart import LinkSpec

pytestmark = pytest.mark.skipif(tools_missing() is not None, reason=str(tools_missing()))


@dataclass(frozen=True)
class Proof:
    """One property: its wrapper factory, the SymbiYosys mode and depth."""

    make: Any
    mode: str
    depth: int


PROOFS = {
    # the shift PE at the default widths and at the widest config (acc 48, exp 5), inductive
    "pe_equals_spec": Proof(lambda broken: PESpec(acc_bits=32, exp_bits=4, broken=broken),
                            "prove", 2),
    "pe_equals_spec_wide": Proof(lambda broken: PESpec(acc_bits=48, exp_bits=5, broken=broken),
                                 "prove", 2),
    "decoder_in_order": Proof(lambda broken: DecoderSpec(max_k=4, max_d=3, blocks=4,
                                                         broken=broken), "bmc", 10),
    "cbfetch_exact_blocks": Proof(lambda broken: FetchSpec(broken=broken), "bmc", 16),
    "uart_no_write_for_bad_frame": Proof(lambda broken: LinkSpec(broken=broken), "bmc", 16),
    "controller_sync_hazard": Proof(lambda broken: ControllerSpec(program_len=4,
                                                                  broken=broken), "bmc", 12),
}


def _run(name: str, broken: bool, tmp_path: Path, record) -> bool:
    p = PROOFS[name]
    top = p.make(broken)
    res = prove(top, top.ports, tmp_path / name, name=name, mode=p.mode, depth=p.depth)
    record(f"{name}{'_mutant' if broken else ''}", res.seconds, res.passed)
    return res.passed


@pytest.mark.parametrize("name", list(PROOFS))
def test_proof_holds(name, tmp_path, formal_record):
    assert _run(name, False, tmp_path, formal_record), f"property {name} failed"


@pytest.mark.parametrize("name", list(PROOFS))
def test_mutation_fails(name, tmp_path, formal_record):
    assert not _run(name, True, tmp_path, formal_record), \
        f"the broken block passed {name}: the property does not catch it"
