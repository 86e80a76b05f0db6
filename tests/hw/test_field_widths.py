"""Config-sized instruction latches: the widths the core keeps per COMPUTE field and layer
register, the layout the controller and compute unit use, and the compiler's refusal of a
value that would not fit (so nothing wraps silently)."""

from __future__ import annotations

import dataclasses

import pytest

from shiftbook import fields
from shiftbook.boards.targets import get_target
from shiftbook.config import PRESETS
from shiftbook.fields import check_fields, field_bits
from shiftbook.hw.compute import compute_insn_layout
from shiftbook.isa import FIELDS, Insn, Opcode, Reg
from shiftbook.sw.compiler import CompileError, compile_graph
from shiftbook.sw.reference import random_layer

ICE = get_target("icebreaker").config


def test_icebreaker_widths():
    # abuf 1024 B (10 address bits), obuf 256 B (8), wbuf 256 rows (8), bbuf 4 rows (2),
    # 1x1 array, k <= 16, d <= 4, 4-byte WGT rows (32 bits).
    fb = field_bits(ICE)
    want = {
        "ox0": 11, "iy0": 12, "ix0": 12, "npix": 1, "col0": 1, "ncols": 1,
        "act_base": 10, "o_off": 8, "wgt_base": 8, "bias_row": 2,
        "reg_in_h": 11, "reg_in_w": 11, "reg_out_w": 11, "reg_kh": 11, "reg_kw": 11,
        "reg_nch": 11, "reg_stride_x": 11, "reg_stride_y": 11, "reg_pad_l": 11,
        "reg_a_pitch": 10, "reg_a_plane": 10, "reg_a_wrap": 10, "reg_o_wrap": 8,
        "reg_mode": 2, "reg_flags": 2, "reg_wfmt": 1,
        "reg_cb_d": 3, "reg_cb_k": 5, "reg_idx_bits": 3, "reg_idx_per_row": 6,
    }
    assert {k: fb[k][0] for k in want} == want
    assert fb["iy0"][1] == "signed" and fb["act_base"][1] == "mod"
    assert fb["reg_in_h"][1] == "value" and fb["reg_a_wrap"][1] == "mod"


def test_widths_never_exceed_the_isa_and_cover_every_field():
    for cfg in [ICE, *PRESETS.values()]:
        fb = field_bits(cfg)
        for name, (_, width) in FIELDS[Opcode.COMPUTE].items():
            assert 1 <= fb[name][0] <= width, (cfg.name, name)
        for reg in Reg:
            assert 1 <= fb[f"reg_{reg.name.lower()}"][0] <= 32, (cfg.name, reg)
        assert len(fb) == len(FIELDS[Opcode.COMPUTE]) + len(Reg)


def test_issue_layout_follows_the_table():
    layout = compute_insn_layout(ICE)
    fb = field_bits(ICE)
    for name, (bits, kind) in fb.items():
        shape = layout[name].shape
        assert shape.width == bits and shape.signed == (kind == "signed"), name
    # the latched copy of a COMPUTE with every layer register: 764 ISA bits, far fewer here
    isa_bits = sum(w for _, w in FIELDS[Opcode.COMPUTE].values()) + 32 * len(Reg)
    assert isa_bits == 764
    assert layout.size == 227   # 68 COMPUTE bits + 159 register bits


def _set(reg: Reg, value: int) -> Insn:
    return Insn(Opcode.SET, {"reg": int(reg), "value": value})


def test_check_fields_bounds():
    assert check_fields([_set(Reg.IN_W, 2047), _set(Reg.MODE, 2), _set(Reg.WFMT, 1),
                         _set(Reg.CB_K, 16), _set(Reg.CB_D, 4)], ICE) is None
    msg = check_fields([_set(Reg.MODE, 1), _set(Reg.IN_W, 2048)], ICE)
    assert msg is not None and "instruction 1: SET IN_W=2048" in msg and "11 bits" in msg
    assert "icebreaker" in msg and "\n" not in msg
    assert "SET CB_K=32" in check_fields([_set(Reg.CB_K, 32)], ICE)
    assert "SET WFMT=2" in check_fields([_set(Reg.WFMT, 2)], ICE)
    # address fields wrap modulo the buffer in every model: never refused
    assert check_fields([_set(Reg.A_WRAP, -1000), _set(Reg.A_PITCH, 5000)], ICE) is None
    comp = {"clear": 1, "drain": 1, "ox0": 0, "iy0": -2048, "ix0": 2047, "npix": 1,
            "col0": 0, "ncols": 1, "act_base": -7, "o_off": 300, "wgt_base": 999,
            "bias_row": 9}
    assert check_fields([Insn(Opcode.COMPUTE, comp)], ICE) is None
    msg = check_fields([Insn(Opcode.COMPUTE, {**comp, "ncols": 2})], ICE)
    assert msg is not None and "COMPUTE.ncols=2" in msg and "1 bits" in msg
    msg = check_fields([Insn(Opcode.COMPUTE, {**comp, "npix": 2})], ICE)
    assert msg is not None and "COMPUTE.npix=2" in msg
    wide = dataclasses.replace(ICE, rows=4, cols=4)
    assert check_fields([Insn(Opcode.COMPUTE, {**comp, "npix": 4, "ncols": 4})], wide) is None


def test_compiler_refuses_a_value_the_core_would_cut(monkeypatch):
    layer = random_layer("conv", 2, 2, 3, size=6, seed=3, exp_bits=3, acc_bits=24)
    prog = compile_graph(layer.graph, ICE, layer.inputs)      # fits: compiles
    assert check_fields(prog.insns, ICE) is None
    # Pretend the core latches only 3 bits per dimension: IN_W=6 still fits, KH etc. too,
    # but the 8-wide padded geometry does not; the compiler must say so, not wrap.
    monkeypatch.setattr(fields, "dim_bits", lambda cfg: 2)
    with pytest.raises(CompileError, match=r"does not fit the \d+ (signed )?bits that core "
                                           r"config 'icebreaker' latches"):
        compile_graph(layer.graph, ICE, layer.inputs)
