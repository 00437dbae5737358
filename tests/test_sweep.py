"""Parameter sweeps (core.postprocess.sweep) and the ``napari-vesuvius sweep`` command."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import tifffile

from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.metric import score_volume
from napari_vesuvius.core.postprocess import ConfigError, PostprocessConfig, run_pipeline
from napari_vesuvius.core.postprocess.sweep import (
    SweepCase,
    iter_score_cases,
    parse_values,
    run_sweep,
    sweep_configs,
    value_range,
    volume_files,
)

SHAPE = (24, 32, 32)
HYSTERESIS = PostprocessConfig(t_low=0.3, t_high=0.85)


def sheet_with_spur(dtype: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """A true sheet (p=0.9) plus a spurious sheet and bridge at p=0.33 joined to it; some ignore.

    Hysteresis keeps the spur for T_low <= 0.33 (hurting the score) and drops it above, where the
    prediction equals the label: the best T_low is the first grid value above 0.33.
    """
    label = np.zeros(SHAPE, np.uint8)
    label[8:11] = 1
    label[:, :, :2] = 2
    prob = np.full(SHAPE, 0.05, np.float32)
    prob[8:11] = 0.9
    prob[15:17] = 0.33
    prob[11:15, 10:13, 10:13] = 0.33
    if dtype == "uint8":
        return np.round(prob * 255).astype(np.uint8), label
    return prob.astype(dtype), label


@pytest.mark.parametrize("dtype", ["float32", "uint8"])
def test_sweep_finds_the_known_best_t_low(dtype):
    prob, label = sheet_with_spur(dtype)
    result = run_sweep([("sheet", prob, label)], HYSTERESIS, "t_low", parse_values("0.2:0.6:0.05"))
    assert result.values[0] == 0.2 and result.values[-1] == 0.6 and len(result.values) == 9
    assert result.best_value == pytest.approx(0.35)
    assert result.best_score == pytest.approx(1.0)
    scores = dict(zip(result.values, result.mean_scores, strict=True))
    assert all(scores[v] < 0.95 for v in (0.2, 0.25, 0.3))
    assert all(scores[v] == pytest.approx(1.0) for v in (0.35, 0.4, 0.5, 0.6))
    assert result.best_config().t_low == pytest.approx(0.35)
    assert result.best_config().t_high == 0.85
    # every recorded score is the metric of the pipeline's mask
    for value, scored in zip(result.values, result.results[0], strict=True):
        mask = run_pipeline(prob, dataclasses.replace(HYSTERESIS, t_low=value))
        assert scored.to_dict() == score_volume(mask, label).to_dict()


@pytest.mark.parametrize(
    ("parameter", "values"),
    [("dust_size", [0, 20, 500]), ("keep_largest", [0, 1, 2]), ("closing_z", [0, 1, 3]), ("margin", [0, 2])],
)
def test_cached_sweeps_equal_the_plain_pipeline(parameter, values):
    """Reused thresholds / labellings / scores give exactly the per-value pipeline + metric."""
    from napari_vesuvius.core.synthetic import make_fragment

    fragment = make_fragment((24, 32, 32), seed=2)
    rng = np.random.default_rng(1)
    prob = np.clip(fragment.surface * 0.8 + rng.random(fragment.surface.shape) * 0.4, 0, 1)
    prob = prob.astype(np.float32)
    base = PostprocessConfig(t_low=0.5, t_high=0.9, dust_size=0)
    cases = [
        SweepCase("a", prob, fragment.labels, fragment.scan_mask),
        ("b", prob[::-1].copy(), fragment.labels),
    ]
    result = run_sweep(cases, base, parameter, values)
    assert result.case_names == ["a", "b"]
    for case, row in zip(cases, result.results, strict=True):
        scan = case[3] if len(case) == 4 else None
        for value, scored in zip(values, row, strict=True):
            config = dataclasses.replace(base, **{parameter: value})
            expected = score_volume(run_pipeline(case[1], config, scan_mask=scan), case[2])
            assert scored.to_dict() == expected.to_dict(), (case[0], value)
    means = result.mean_terms
    for j in range(len(values)):
        assert means["surface_dice"][j] == pytest.approx(
            np.mean([row[j].surface_dice for row in result.results])
        )
    summary = result.to_dict()
    assert summary["best_value"] == result.best_value and len(summary["per_volume"]) == 2 * len(values)
    json.dumps(summary)


def test_loaders_and_one_config_scoring():
    prob, label = sheet_with_spur()
    loaded = []

    def load():
        loaded.append(1)
        return prob

    result = run_job_score([SweepCase("x", load, lambda: label)], dataclasses.replace(HYSTERESIS, t_low=0.5))
    assert loaded == [1] and result.values == [0] and result.mean_scores == [pytest.approx(1.0)]


def run_job_score(cases, config):
    from napari_vesuvius.core.progress import run_job

    return run_job(iter_score_cases(cases, config))


def test_parse_values_forms_and_errors():
    assert parse_values("0.2:0.6:0.1") == [0.2, 0.3, 0.4, 0.5, 0.6]
    assert parse_values("0:200:50") == [0, 50, 100, 150, 200]
    assert parse_values("0.5, 0.2,0.3,0.2") == [0.2, 0.3, 0.5]
    assert parse_values("0.4") == [0.4]
    assert value_range(0.1, 0.3, 0.1) == [0.1, 0.2, 0.3]
    for bad, problem in [
        ("", "empty"),
        ("0.2:0.6", "start:stop:step"),
        ("0.2:0.6:0", "positive"),
        ("0.6:0.2:0.1", "below start"),
        ("0.2,abc", "'abc' is not a number"),
        ("0:1:0.00001", "at most"),
    ]:
        with pytest.raises(ValueError, match=problem):
            parse_values(bad)


def test_bad_parameters_and_values_are_named():
    with pytest.raises(ConfigError, match="cannot sweep 'gate_to_scan'"):
        sweep_configs(HYSTERESIS, "gate_to_scan", [True])
    with pytest.raises(ConfigError, match="'threshold' has no effect unless threshold_mode is 'absolute'"):
        sweep_configs(HYSTERESIS, "threshold", [0.5])
    with pytest.raises(ConfigError, match=r"sweep value 0\.9 for 't_low'.*must not exceed t_high"):
        sweep_configs(HYSTERESIS, "t_low", [0.5, 0.9])
    with pytest.raises(ConfigError, match=r"'closing_z': value 1\.5 must be a whole number"):
        sweep_configs(HYSTERESIS, "closing_z", [1, 1.5])
    with pytest.raises(ConfigError, match=r"'dust_size'.*-5 must be a non-negative integer"):
        sweep_configs(HYSTERESIS, "dust_size", [-5])
    with pytest.raises(ConfigError, match="duplicate"):
        sweep_configs(HYSTERESIS, "t_low", [0.3, 0.3])
    with pytest.raises(ConfigError, match="no values"):
        sweep_configs(HYSTERESIS, "t_low", [])
    assert [c.closing_z for c in sweep_configs(HYSTERESIS, "closing_z", [0.0, 2.0])] == [0, 2]
    prob, label = sheet_with_spur()
    with pytest.raises(VolumeError, match=r"^bad: label shape \(24, 32, 30\)"):
        run_sweep([("bad", prob, label[:, :, :30])], HYSTERESIS, "t_low", [0.3])
    with pytest.raises(VolumeError, match=r"^neg: probabilities must lie in"):
        run_sweep([("neg", prob - 1, label)], HYSTERESIS, "t_low", [0.3])


@pytest.fixture
def volume_folders(tmp_path):
    """Two probability/label/CT files per folder: ``v1`` is the spur case, ``v2`` its z-flip."""
    prob, label = sheet_with_spur("uint8")
    folders = {name: tmp_path / name for name in ("prob", "label", "ct")}
    for folder in folders.values():
        folder.mkdir()
    for volume_id, flip in (("v1", False), ("v2", True)):
        p, lab = (prob[::-1], label[::-1]) if flip else (prob, label)
        tifffile.imwrite(folders["prob"] / f"{volume_id}.tif", np.ascontiguousarray(p))
        tifffile.imwrite(folders["label"] / f"{volume_id}.tif", np.ascontiguousarray(lab))
        tifffile.imwrite(folders["ct"] / f"{volume_id}.tif", np.full(SHAPE, 100, np.uint8))
    return folders


def test_cli_sweep_json_on_files_and_folders(volume_folders, tmp_path, capsys):
    config = tmp_path / "base.json"
    HYSTERESIS.save(config)
    best = tmp_path / "best.json"
    p, lab = volume_folders["prob"], volume_folders["label"]
    args = ["sweep", str(p / "v1.tif"), str(lab / "v1.tif"), "--param", "t_low", "--values", "0.2:0.5:0.05"]
    assert main([*args, "--config", str(config), "--json", "--write-best", str(best)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["parameter"] == "t_low" and out["volumes"] == ["v1"]
    assert out["best_value"] == pytest.approx(0.35) and out["best_score"] == pytest.approx(1.0)
    assert set(out["mean_terms"]) == {"score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge"}
    assert PostprocessConfig.load(best) == dataclasses.replace(HYSTERESIS, t_low=out["best_value"])

    args = [
        "sweep",
        str(p),
        str(lab),
        "--param",
        "dust_size",
        "--values",
        "0,100,100000",
        "--ct",
        str(volume_folders["ct"]),
    ]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["volumes"] == ["v1", "v2"] and out["values"] == [0, 100, 100000]
    assert {row["id"] for row in out["per_volume"]} == {"v1", "v2"}
    empty = score_volume(np.zeros(SHAPE, bool), sheet_with_spur()[1]).score  # dust removes everything
    assert out["mean_scores"][2] == pytest.approx(empty) and empty < out["mean_scores"][0]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "best dust_size = 0" in table and "over 2 volumes" in table


def test_cli_sweep_reports_missing_pairs_and_bad_values(volume_folders, capsys):
    p, lab, ct = volume_folders["prob"], volume_folders["label"], volume_folders["ct"]
    (lab / "v2.tif").unlink()
    assert main(["sweep", str(p), str(lab), "--param", "t_low", "--values", "0.3"]) == 1
    assert "no label for prediction v2.tif" in capsys.readouterr().err
    (p / "v2.tif").unlink()
    (ct / "v1.tif").unlink()
    assert main(["sweep", str(p), str(lab), "--param", "t_low", "--values", "0.3", "--ct", str(ct)]) == 1
    assert "no CT volume for id(s) v1" in capsys.readouterr().err
    assert main(["sweep", str(p), str(lab), "--param", "t_low", "--values", "0.3:x:1"]) == 1
    assert "--values" in capsys.readouterr().err
    assert main(["sweep", str(p), str(lab), "--param", "threshold", "--values", "0.3"]) == 1
    assert "threshold_mode is 'absolute'" in capsys.readouterr().err


def _noisy_components(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smoothed noise: a threshold gives many components of many sizes (ties included), with ignore."""
    from scipy import ndimage as ndi

    rng = np.random.default_rng(seed)
    smooth = ndi.uniform_filter(rng.random((20, 26, 24)), 3)
    rank = np.argsort(np.argsort(smooth.ravel())).reshape(smooth.shape)
    prob = (rank / rank.size).astype(np.float32)  # uniform: a threshold of 0.86 keeps ~14 %
    label = (ndi.uniform_filter(rng.random(prob.shape), 3) > 0.52).astype(np.uint8)
    label[:, :2] = 2
    return prob, label


@pytest.mark.parametrize(
    ("parameter", "values", "base"),
    [
        ("dust_size", [0, 2, 5, 9, 20, 60, 400], {}),  # dust only
        ("keep_largest", [0, 1, 2, 3, 6, 50], {}),  # keep-k only
        ("dust_size", [0, 10, 40, 100, 300], {"keep_largest": 8}),  # both
        ("keep_largest", [0, 1, 4, 12], {"dust_size": 6}),  # both
    ],
)
def test_component_sweeps_equal_scoring_the_pipeline_masks(parameter, values, base):
    """Scores from the sweep's one-labelling path equal scoring the mask ``run_pipeline`` writes."""
    config = PostprocessConfig(threshold_mode="absolute", threshold=0.86, **{"dust_size": 0, **base})
    for seed in range(3):
        prob, label = _noisy_components(seed)
        scan = np.ones(prob.shape, bool)
        scan[:, :, -3:] = False
        result = run_sweep([SweepCase(f"r{seed}", prob, label, scan)], config, parameter, values)
        masks = []
        for value, scored in zip(values, result.results[0], strict=True):
            mask = run_pipeline(prob, dataclasses.replace(config, **{parameter: value}), scan_mask=scan)
            masks.append(mask)
            assert scored.to_dict() == score_volume(mask, label).to_dict(), (seed, value)
        assert len({m.sum() for m in masks}) > 2  # the values really change the mask


def test_volume_files_ids_match_the_reader(tmp_path):
    from napari_vesuvius._reader import read_volumes
    from napari_vesuvius.core.volume.io import volume_id, write_ome_zarr, write_volume

    volume = np.zeros((4, 8, 8), np.uint8)
    write_ome_zarr(tmp_path / "a.ome.zarr", [volume], chunks=(4, 8, 8))
    write_volume(tmp_path / "b.zarr", volume)
    tifffile.imwrite(tmp_path / "c.tif", volume, photometric="minisblack")
    tifffile.imwrite(tmp_path / "d.ome.tiff", volume, photometric="minisblack")
    found = volume_files(tmp_path)
    assert sorted(found) == ["a", "b", "c", "d"]
    for name, path in found.items():
        [(_, meta, _)] = read_volumes(str(path))
        assert meta["metadata"]["vesuvius_id"] == name == volume_id(path)
    assert volume_id("x/1234.OME.ZARR/") == "1234" and volume_id(".tif") == ".tif"
