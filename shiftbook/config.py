"""CoreConfig: the one source of truth for the accelerator's shape.

The gateware is elaborated from it, the compiler tiles for it, the simulators and estimators
read it, and every program bundle carries it with its hash. It imports neither torch nor
Amaranth, so both sides of the project can use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ConfigError", "CoreConfig", "PE_KINDS", "PRESETS", "load_config"]

PE_KINDS = ("shift", "mult")


class ConfigError(ValueError):
    """An invalid CoreConfig; the message names the field."""


def _is_pow2(v: int) -> bool:
    return v > 0 and (v & (v - 1)) == 0


@dataclass(frozen=True)
class CoreConfig:
    """Parameters of one accelerator instance.

    Parameters
    ----------
    rows, cols:
        PE array shape. Rows are output pixels, columns output channels.
    act_bits:
        Activation width (signed two's complement). Default int8.
    acc_bits:
        Accumulator width in every PE (signed two's complement).
    exp_bits:
        Width of a shift code's exponent field: a weight code is ``(zero, sign, exponent)``
        with ``exponent`` in ``[0, 2**exp_bits - 1]``, value ``0`` or ``±2**exponent``.
    bus_bytes:
        External memory bus width in bytes (a power of two). Every buffer row and every
        tensor row pitch is a multiple of it.
    mem_latency:
        Cycles from a read request accepted by external memory to its data (>= 1).
    mem_words:
        External memory size in bus words (a power of two); the simulation model's size.
    abuf_bytes:
        Activation buffer size in bytes (each PE row reads its own copy).
    wbuf_rows:
        Weight buffer depth in rows (one row = one weight code per column for one
        reduction step).
    bbuf_rows:
        Bias/requantization parameter buffer depth in rows (one row = one entry per column).
    obuf_bytes:
        Output buffer size per column bank in bytes; the residual buffer has the same shape.
    max_k, max_d:
        Largest codebook size (codewords) and block size (codes per codeword) the weight
        decoder supports.
    pe:
        ``"shift"`` (the product) or ``"mult"`` (an int8-weight multiplier PE, a baseline
        for comparisons only).
    """

    rows: int = 4
    cols: int = 8
    act_bits: int = 8
    acc_bits: int = 32
    exp_bits: int = 4
    bus_bytes: int = 8
    mem_latency: int = 8
    mem_words: int = 1 << 20
    abuf_bytes: int = 16384
    wbuf_rows: int = 2048
    bbuf_rows: int = 64
    obuf_bytes: int = 8192
    max_k: int = 2048
    max_d: int = 18
    pe: str = "shift"
    name: str = field(default="custom", compare=False)

    def __post_init__(self) -> None:
        ints = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("pe", "name")}
        for fname, value in ints.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise ConfigError(f"CoreConfig.{fname} must be an integer, not {value!r}")
        _check(1 <= self.rows <= 64, "rows", self.rows, "must be in [1, 64]")
        _check(1 <= self.cols <= 64, "cols", self.cols, "must be in [1, 64]")
        _check(self.act_bits == 8, "act_bits", self.act_bits, "must be 8 (int8 activations)")
        _check(16 <= self.acc_bits <= 48, "acc_bits", self.acc_bits, "must be in [16, 48]")
        _check(1 <= self.exp_bits <= 5, "exp_bits", self.exp_bits, "must be in [1, 5]")
        max_shift = (1 << self.exp_bits) - 1
        _check(self.act_bits + max_shift + 1 <= self.acc_bits, "exp_bits", self.exp_bits,
               f"gives products of {self.act_bits + max_shift} bits, which do not fit "
               f"acc_bits={self.acc_bits}")
        _check(_is_pow2(self.bus_bytes) and 1 <= self.bus_bytes <= 64, "bus_bytes",
               self.bus_bytes, "must be a power of two in [1, 64]")
        _check(1 <= self.mem_latency <= 256, "mem_latency", self.mem_latency,
               "must be in [1, 256]")
        _check(_is_pow2(self.mem_words) and self.mem_words <= 1 << 28, "mem_words",
               self.mem_words, "must be a power of two <= 2**28")
        # Upper limits follow from the ISA's address fields (docs/isa.md).
        for fname, top in (("abuf_bytes", 21), ("obuf_bytes", 18), ("wbuf_rows", 16),
                           ("bbuf_rows", 10)):
            v = getattr(self, fname)
            bottom = self.bus_bytes if fname.endswith("bytes") else 2
            _check(_is_pow2(v) and bottom <= v <= 1 << top, fname, v,
                   f"must be a power of two in [{bottom}, 2**{top}]")
        _check(_is_pow2(self.max_k) and 2 <= self.max_k <= 1 << 16, "max_k", self.max_k,
               "must be a power of two in [2, 65536]")
        _check(1 <= self.max_d <= 64, "max_d", self.max_d, "must be in [1, 64]")
        _check(self.pe in PE_KINDS, "pe", self.pe, f"must be one of {', '.join(PE_KINDS)}")

    # ---- derived quantities (never stored) ----
    @property
    def pes(self) -> int:
        return self.rows * self.cols

    @property
    def code_bits(self) -> int:
        """Bits of one shift code: zero flag, sign, exponent."""
        return self.exp_bits + 2

    @property
    def max_shift(self) -> int:
        return (1 << self.exp_bits) - 1

    def row_bytes(self, payload_bytes: int) -> int:
        """A buffer row of ``payload_bytes`` rounded up to a power-of-two number of bus words
        (so the hardware splits a flat word address into row and word with bit slices)."""
        words = -(-payload_bytes // self.bus_bytes)
        return self.bus_bytes * (1 << (words - 1).bit_length())

    @property
    def index_bits_max(self) -> int:
        """Bits of the widest codebook index, ceil(log2 max_k)."""
        return max(1, (self.max_k - 1).bit_length())

    @property
    def wbuf_row_bytes(self) -> int:
        """Bytes of one WGT row: a raw row (one code byte per column) or one index row of the
        widest index (``cols * index_bits_max`` bits), whichever is larger."""
        return self.row_bytes(max(self.cols, -(-self.cols * self.index_bits_max // 8)))

    @property
    def bbuf_row_bytes(self) -> int:
        """Bytes of one bias row: 8 bytes per column (see docs/isa.md)."""
        return self.row_bytes(8 * self.cols)

    # ---- serialisation ----
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> CoreConfig:
        if not isinstance(d, dict):
            raise ConfigError("a CoreConfig must be a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown CoreConfig field {unknown[0]!r} "
                              f"(known: {', '.join(sorted(known))})")
        return cls(**d)

    @classmethod
    def from_json(cls, text: str) -> CoreConfig:
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"config is not valid JSON: {e}") from None
        return cls.from_dict(d)

    @property
    def hash(self) -> str:
        """Stable hash of every field that changes the hardware (not ``name``)."""
        d = self.to_dict()
        d.pop("name")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _check(ok: bool, fname: str, value: object, why: str) -> None:
    if not ok:
        raise ConfigError(f"CoreConfig.{fname}={value!r} {why}")


PRESETS: dict[str, CoreConfig] = {
    "tiny": CoreConfig(rows=2, cols=2, abuf_bytes=8192, wbuf_rows=1024, bbuf_rows=16,
                       obuf_bytes=2048, max_k=256, max_d=9, mem_latency=4, name="tiny"),
    "small": CoreConfig(rows=4, cols=8, max_k=256, name="small"),
    # wbuf_rows=8192: a 512-channel 3x3 group (4608 weight rows) fits one half of WGT, so
    # ResNet-18's layer3/4 weights are read once (3x3 utilization 0.68 -> 0.81, measured).
    "base": CoreConfig(rows=16, cols=16, abuf_bytes=65536, wbuf_rows=8192, bbuf_rows=64,
                       obuf_bytes=16384, mem_words=1 << 22, max_k=256, name="base"),
    # base with 64 MiB of external memory (mem_words 2**23): the built-in ImageNet models
    # (ResNet-50's raw shift-code image is ~40 MB; base addresses 32 MiB).
    "base-xl": CoreConfig(rows=16, cols=16, abuf_bytes=65536, wbuf_rows=8192, bbuf_rows=64,
                          obuf_bytes=16384, mem_words=1 << 23, max_k=256, name="base-xl"),
    # Codebooks up to k=2048 (ResNet fc layers in "And the Bit Goes Down"): 11-bit indices
    # widen every WGT row to hold one index row (docs/decoder.md).
    "small-k2048": CoreConfig(rows=4, cols=8, max_k=2048, name="small-k2048"),
}


def load_config(spec: str | Path | None) -> CoreConfig:
    """A preset name, a JSON file path, or None (the ``small`` preset)."""
    if spec is None:
        return PRESETS["small"]
    s = str(spec)
    if s in PRESETS:
        return PRESETS[s]
    p = Path(s)
    if not p.exists():
        raise ConfigError(f"config {s!r} is neither a preset ({', '.join(PRESETS)}) "
                          f"nor an existing file")
    if not p.is_file():
        raise ConfigError(f"config {s!r} is a directory, not a JSON file")
    try:
        return CoreConfig.from_json(p.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(f"config {s}: not a text (UTF-8 JSON) file") from None
    except ConfigError as e:
        raise ConfigError(f"config {s}: {e}") from None
