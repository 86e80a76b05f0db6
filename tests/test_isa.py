"""ISA encode/decode: round trips, field bounds, signed fields."""

import random

import pytest

from shiftbook.isa import (
    FIELDS,
    INSN_BITS,
    SIGNED_FIELDS,
    Insn,
    IsaError,
    Opcode,
    Reg,
    decode,
    decode_program,
    encode,
    encode_program,
)


def test_fields_fit_and_do_not_overlap():
    for op, fields in FIELDS.items():
        used = 0xF
        for name, (lsb, width) in fields.items():
            mask = ((1 << width) - 1) << lsb
            assert used & mask == 0, f"{op.name}.{name} overlaps"
            used |= mask
        assert used < 1 << INSN_BITS, op.name


def _random_args(op, rng):
    args = {}
    for name, (_, width) in FIELDS[op].items():
        if op == Opcode.COMPUTE and name in SIGNED_FIELDS:
            args[name] = rng.randrange(-(1 << (width - 1)), 1 << (width - 1))
        elif op == Opcode.SET and name == "reg":
            args[name] = int(rng.choice(list(Reg)))
        elif op == Opcode.SET and name == "value":
            args[name] = rng.randrange(0, 1 << 31)
        else:
            args[name] = rng.randrange(0, 1 << width)
    return args


def test_random_round_trip():
    rng = random.Random(0)
    prog = []
    for _ in range(2000):
        op = rng.choice(list(Opcode))
        prog.append(Insn(op, _random_args(op, rng)))
    for insn in prog:
        assert decode(encode(insn)) == insn
    blob = encode_program(prog)
    assert decode_program(blob, stop_at_end=False) == prog


def test_signed_set_register():
    insn = Insn(Opcode.SET, {"reg": Reg.A_WRAP, "value": -300})
    assert decode(encode(insn)).value == -300
    with pytest.raises(IsaError, match="does not fit"):
        encode(Insn(Opcode.SET, {"reg": Reg.KH, "value": -1}))


def test_bad_fields_rejected():
    full = {name: 0 for name in FIELDS[Opcode.COMPUTE]}
    with pytest.raises(IsaError, match="does not fit 7 bits"):
        encode(Insn(Opcode.COMPUTE, {**full, "npix": 128}))
    with pytest.raises(IsaError, match="no field 'bogus'"):
        encode(Insn(Opcode.LOAD, {"bogus": 1}))
    with pytest.raises(IsaError, match="unknown opcode 15"):
        decode(15)
    with pytest.raises(IsaError, match="unknown register"):
        decode(int(Opcode.SET) | (200 << 4))


def test_missing_or_non_integer_field_is_an_error():
    """A field left out is refused, never encoded as 0 (and a float or bool is no integer)."""
    full = {name: 1 for name in FIELDS[Opcode.LOAD]}
    assert decode(encode(Insn(Opcode.LOAD, full))).args == full
    for name in FIELDS[Opcode.LOAD]:
        part = {k: v for k, v in full.items() if k != name}
        with pytest.raises(IsaError, match=f"LOAD lacks field '{name}'"):
            encode(Insn(Opcode.LOAD, part))
    with pytest.raises(IsaError, match="is not an integer"):
        encode(Insn(Opcode.LOAD, {**full, "words": 2.0}))
    with pytest.raises(IsaError, match="is not an integer"):
        encode(Insn(Opcode.SYNC, {"mask": True}))
