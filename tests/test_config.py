"""CoreConfig: validation names the field, JSON round trip, stable hash."""

import json

import pytest

from shiftbook.config import PRESETS, ConfigError, CoreConfig, load_config


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip(name):
    cfg = PRESETS[name]
    again = CoreConfig.from_json(cfg.to_json())
    assert again == cfg
    assert again.hash == cfg.hash


def test_hash_ignores_name_but_not_hardware_fields():
    a = CoreConfig(rows=4, cols=8, name="a")
    assert a.hash == CoreConfig(rows=4, cols=8, name="b").hash
    assert a.hash != CoreConfig(rows=4, cols=9).hash
    assert a.hash != CoreConfig(rows=4, cols=8, mem_latency=9).hash


def test_hash_is_stable_across_processes():
    # Pinned value: a change here silently invalidates every bundle ever written.
    assert CoreConfig().hash == CoreConfig.from_dict(json.loads(CoreConfig().to_json())).hash
    assert len(CoreConfig().hash) == 16


@pytest.mark.parametrize("field,value", [
    ("rows", 0), ("cols", 65), ("act_bits", 4), ("acc_bits", 8), ("exp_bits", 0),
    ("bus_bytes", 3), ("mem_latency", 0), ("abuf_bytes", 1000), ("wbuf_rows", 1 << 17),
    ("bbuf_rows", 1 << 11), ("max_k", 100), ("max_d", 0), ("pe", "float"), ("rows", 2.5),
])
def test_invalid_field_is_named(field, value):
    with pytest.raises(ConfigError, match=f"CoreConfig.{field}"):
        CoreConfig(**{field: value})


def test_products_must_fit_accumulator():
    with pytest.raises(ConfigError, match="exp_bits"):
        CoreConfig(acc_bits=16, exp_bits=4)


def test_unknown_json_field_and_bad_json():
    with pytest.raises(ConfigError, match="unknown CoreConfig field 'colz'"):
        CoreConfig.from_dict({"colz": 3})
    with pytest.raises(ConfigError, match="not valid JSON"):
        CoreConfig.from_json("{rows: 3")


def test_load_config(tmp_path):
    assert load_config(None) == PRESETS["small"]
    assert load_config("base") == PRESETS["base"]
    p = tmp_path / "c.json"
    p.write_text(CoreConfig(rows=2, cols=3).to_json())
    assert load_config(p).cols == 3
    with pytest.raises(ConfigError, match="neither a preset"):
        load_config(tmp_path / "missing.json")
