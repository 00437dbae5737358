"""PostprocessConfig: JSON round trip, atomic save, clear errors for unknown keys and bad values."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from napari_vesuvius.core.postprocess import ConfigError, PostprocessConfig


def test_defaults_are_the_documented_ones() -> None:
    config = PostprocessConfig()
    assert (config.threshold_mode, config.t_low, config.t_high) == ("hysteresis", 0.30, 0.85)
    assert (config.closing_z, config.closing_xy, config.dust_size) == (2, 1, 100)
    assert config.gate_to_scan and not config.fill_holes and config.keep_largest == 0


def test_json_round_trip(tmp_path: Path) -> None:
    config = PostprocessConfig(
        threshold_mode="percentile",
        percentile_fraction=0.04,
        opening_z=1,
        fill_holes=True,
        fill_holes_axis=2,
        max_hole_size=50,
        fill_cavities=True,
        keep_largest=3,
        margin=2,
    )
    assert PostprocessConfig.from_json(config.to_json()) == config
    path = config.save(tmp_path / "cfg.json")
    assert PostprocessConfig.load(path) == config
    assert json.loads(path.read_text())["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.json"]  # no temporary file left behind


def test_missing_keys_take_defaults_and_ints_are_floats() -> None:
    config = PostprocessConfig.from_dict({"t_low": 0, "dust_size": 50.0})
    assert config.t_low == 0.0 and isinstance(config.t_low, float)
    assert config.dust_size == 50 and isinstance(config.dust_size, int)
    assert config == dataclasses.replace(PostprocessConfig(), t_low=0.0, dust_size=50)


@pytest.mark.parametrize(
    "data, message",
    [
        ({"t_lo": 0.3}, "unknown key(s) 't_lo'"),
        ({"t_low": "0.3"}, "key 't_low': expected float"),
        ({"t_low": 1.5}, "key 't_low': 1.5 must be a number in [0, 1]"),
        ({"t_low": 0.9, "t_high": 0.5}, "key 't_low': 0.9 must not exceed t_high 0.5"),
        ({"threshold_mode": "otsu"}, "key 'threshold_mode': 'otsu' is not one of"),
        ({"closing_z": -1}, "key 'closing_z': -1 must be a non-negative integer"),
        ({"closing_z": 1.5}, "key 'closing_z': expected int"),
        ({"fill_holes": 1}, "key 'fill_holes': expected bool"),
        ({"dust_size": True}, "key 'dust_size': expected int"),
        ({"fill_holes_axis": 3}, "key 'fill_holes_axis': 3 must be 0 (z), 1 (y) or 2 (x)"),
        ({"percentile_fraction": 0}, "key 'percentile_fraction': 0.0 must be in (0, 1]"),
        ({"version": 7}, "unsupported config version 7"),
    ],
)
def test_bad_config_file_names_file_and_key(tmp_path: Path, data: dict, message: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(ConfigError) as info:
        PostprocessConfig.load(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_bad_json_and_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text("{not json")
    with pytest.raises(ConfigError, match=r"broken\.json: not valid JSON"):
        PostprocessConfig.load(path)
    with pytest.raises(ConfigError, match="config file not found"):
        PostprocessConfig.load(tmp_path / "missing.json")
    path.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="expected a JSON object"):
        PostprocessConfig.load(path)


def test_direct_construction_is_validated() -> None:
    with pytest.raises(ConfigError, match="t_high"):
        PostprocessConfig(t_high=2.0)


def test_save_into_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="parent folder does not exist"):
        PostprocessConfig().save(tmp_path / "nope" / "cfg.json")
