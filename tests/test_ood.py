"""The out-of-distribution intensity check: profiles, their checkpoint record, the verdicts, the CLI."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from napari_vesuvius.core.errors import VesuviusWarning
from napari_vesuvius.core.inference.model_api import InferenceModel, Normalization
from napari_vesuvius.core.inference.ood import (
    NNUNET_SOURCE,
    IntensityProfile,
    check_intensity,
    intensity_reference,
    profile_of,
    training_profile,
)
from napari_vesuvius.core.synthetic import make_fragment

SHAPE = (96, 96, 96)
TRAIN_SEEDS = (0, 1, 2, 3)
SCALE = Normalization()
ZSCORE = Normalization(kind="zscore", mean=0.0, std=1.0, input_range=None)
PERCENTILE = Normalization(kind="percentile", mean=0.0, std=1.0, input_range=None, use_mask=True)


@pytest.fixture(scope="module")
def fragments() -> dict[int, np.ndarray]:
    return {seed: make_fragment(SHAPE, seed=seed).image for seed in range(12)}


@pytest.fixture(scope="module")
def profile(fragments: dict[int, np.ndarray]) -> IntensityProfile:
    return training_profile([fragments[s] for s in TRAIN_SEEDS])


def _model(profile: IntensityProfile | dict[str, Any] | None, normalization: Normalization = SCALE) -> Any:
    data = profile.to_dict() if isinstance(profile, IntensityProfile) else profile
    metadata = {} if data is None else {"training_intensity": data}
    return InferenceModel(
        networks=[], patch_size=(16, 16, 16), normalization=normalization, metadata=metadata
    )


def _affine(image: np.ndarray, scale: float, offset: float = 0.0, *, about_mean: bool = False) -> np.ndarray:
    """``image`` with its scanned voxels mapped linearly (air stays 0), clipped to 1-255."""
    scanned = image > 0
    values = image.astype(np.float64)
    pivot = values[scanned].mean() if about_mean else 0.0
    out = np.clip((values - pivot) * scale + pivot + offset, 1, 255)
    return np.where(scanned, out, 0).astype(np.uint8)


def _noisier(image: np.ndarray, sigma: float = 40.0) -> np.ndarray:
    noise = np.random.default_rng(7).normal(0.0, sigma, image.shape)
    return np.where(image > 0, np.clip(image + noise, 1, 255), 0).astype(np.uint8)


class CountingArray:
    """A NumPy volume that counts what is read from it."""

    def __init__(self, data: np.ndarray) -> None:
        self.data, self.shape, self.dtype, self.ndim = data, data.shape, data.dtype, data.ndim
        self.reads, self.voxels = 0, 0

    def __getitem__(self, key: Any) -> np.ndarray:
        block = self.data[key]
        self.reads += 1
        self.voxels += block.size
        return block


# ------------------------------------------------------------------------------------------- profiles
def test_profile_reads_a_few_bounded_blocks_and_is_deterministic(fragments: dict[int, np.ndarray]) -> None:
    big = np.tile(fragments[0], (4, 4, 4))[:320, :320, :320]  # a 320³ volume: never read whole
    counted = CountingArray(big)
    first = profile_of(counted, max_voxels=100_000)
    assert counted.reads <= 27 and counted.voxels <= 100_000
    assert profile_of(CountingArray(big), max_voxels=100_000) == first
    assert first.voxels > 10_000 and first.volumes == 1
    small = CountingArray(fragments[1])  # a volume under the budget is read in one piece
    profile_of(small, max_voxels=SHAPE[0] ** 3)
    assert small.reads == 1


def test_profile_is_the_same_for_numpy_dask_and_a_lazy_file(
    fragments: dict[int, np.ndarray], tmp_path: Path
) -> None:
    import dask.array as da
    import tifffile

    from napari_vesuvius.core.volume.io import open_volume

    image = fragments[2]
    expected = profile_of(image)
    assert profile_of(da.from_array(image, chunks=32)).to_dict() == expected.to_dict()
    tifffile.imwrite(tmp_path / "v.tif", image)
    with open_volume(tmp_path / "v.tif") as volume:
        from_file = profile_of(volume)
    assert replace(from_file, source="") == replace(expected, source="")
    assert from_file.source.endswith("v.tif")


def test_profile_statistics_describe_the_scanned_voxels(fragments: dict[int, np.ndarray]) -> None:
    image = fragments[0]
    profile = profile_of(image)
    scanned = image[image > 0]
    assert profile.percentiles[50.0] == pytest.approx(np.median(scanned), abs=3)
    assert profile.dark < profile.percentiles[50.0] < profile.bright  # air/gaps dominate, papyrus is bright
    assert 0.5 < profile.contrast < 1.0 and profile.separation > 3
    assert sum(profile.histogram) == profile.voxels
    assert profile.foreground["median"] == pytest.approx(profile.bright)


def test_training_profile_keeps_the_spread_over_volumes(
    fragments: dict[int, np.ndarray], profile: IntensityProfile
) -> None:
    medians = [profile_of(fragments[s]).median for s in TRAIN_SEEDS]
    assert profile.volumes == len(TRAIN_SEEDS)
    assert profile.spread["median"] == (min(medians), max(medians))
    assert profile.source == "training"


def test_round_trip_through_json(profile: IntensityProfile) -> None:
    data = json.loads(json.dumps(profile.to_dict()))
    assert IntensityProfile.from_dict(data) == profile
    plans = {"mean": 118.25, "median": 117.0, "std": 41.5, "percentile_00_5": 14.0, "percentile_99_5": 231.0}
    nnunet = IntensityProfile.from_dict({**plans, "max": 255.0, "min": 0.0, "source": NNUNET_SOURCE})
    assert nnunet.is_foreground_only and nnunet.foreground == plans
    assert IntensityProfile.from_dict(json.loads(json.dumps(nnunet.to_dict()))) == nnunet


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda d: d.update(mean=float("nan")), "mean must be finite"),
        (lambda d: d.update(std=-1.0), "std must be positive"),
        (lambda d: d.update(contrast=2.0), "contrast"),
        (lambda d: d["percentiles"][3].__setitem__(1, float("inf")), "finite"),
        (lambda d: d["percentiles"][0].__setitem__(1, 1e9), "decrease"),
        (lambda d: d["percentiles"].pop(), "needs the percentiles"),
        (lambda d: d.update(percentiles=[[33.0, 1.0]]), "not one of"),
        (lambda d: d.update(dark="os.system"), "must be a number"),
        (lambda d: d.update(histogram=[1] * 5000), "histogram"),
        (lambda d: d.update(histogram=[-1]), "non-negative"),
        (lambda d: d["spread"].update(median=[5.0, 1.0]), "low > high"),
        (lambda d: d["foreground"].pop("std"), "foreground.std"),
        (lambda d: d.update(source="x" * 10_000), "source"),
        (lambda d: d.update(voxels=True), "voxels"),
    ],
)
def test_hostile_profiles_are_refused_with_the_field_named(
    profile: IntensityProfile, change: Any, needle: str
) -> None:
    data = json.loads(json.dumps(profile.to_dict()))
    change(data)
    with pytest.raises(ValueError, match=needle):
        IntensityProfile.from_dict(data)


def test_a_hostile_recorded_profile_is_ignored_with_a_warning(fragments: dict[int, np.ndarray]) -> None:
    bright = _affine(fragments[4], 1.5)
    for hostile in (
        {"source": "training", "mean": "nan"},
        [1, 2],
        {"source": NNUNET_SOURCE, "std": math.inf},
    ):
        with pytest.warns(VesuviusWarning, match="ignoring the recorded training intensity profile"):
            assert check_intensity(_model(hostile), bright) is None


def test_no_recorded_profile_means_no_check_and_no_warning(fragments: dict[int, np.ndarray]) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_intensity(_model(None), _affine(fragments[4], 1.5)) is None
    assert check_intensity(_model(profile_of(fragments[0])), np.zeros((40, 40, 40), np.uint8)) is None  # air


# ------------------------------------------------------------------------------------------- verdicts
def test_fixed_scale_models_warn_on_a_brighter_or_darker_volume(
    fragments: dict[int, np.ndarray], profile: IntensityProfile
) -> None:
    model = _model(profile)
    brighter = check_intensity(model, _affine(fragments[4], 1.5), name="scan.tif")
    assert brighter is not None and "brighter" in brighter.directions
    assert brighter.message.startswith("volume scan.tif is brighter than the model's training data")
    assert "in training" in brighter.message and "absolute grey levels" in brighter.remedy
    assert brighter.remedy.count("`napari-vesuvius train`") == 1
    assert brighter.details["level_shift"] > 0.2
    darker = check_intensity(model, _affine(fragments[4], 0.5))
    assert darker is not None and darker.directions[0] == "darker" and darker.details["level_shift"] < -0.2


def test_lower_contrast_is_named_for_both_kinds_of_model(
    fragments: dict[int, np.ndarray], profile: IntensityProfile
) -> None:
    flat = _affine(fragments[4], 0.5, 50.0)  # the same mid-level, half the sheet/background contrast
    shift = check_intensity(_model(profile), flat)
    assert shift is not None and shift.directions == ("lower contrast",)
    assert "finetune" in shift.remedy and "Tune dock" in shift.remedy
    assert check_intensity(_model(profile, ZSCORE), flat) is None  # z-score normalises it away
    noisy = _noisier(fragments[4])  # the sheets drown in noise: lower contrast for every model
    for normalization in (SCALE, ZSCORE):
        shift = check_intensity(_model(profile, normalization), noisy)
        assert shift is not None and "lower contrast" in shift.directions
        assert shift.details["separation_ratio"] < 0.6


def test_z_score_models_name_a_brightness_shift_but_say_it_is_undone(
    fragments: dict[int, np.ndarray], profile: IntensityProfile
) -> None:
    for model in (_model(profile, ZSCORE), _model(profile, PERCENTILE)):
        _brightness_named_as_undone(model, fragments[4])
    # the same mid-level with half the sheet/background contrast: exactly what the z-score normalises away
    assert check_intensity(_model(profile, ZSCORE), _affine(fragments[4], 0.5, 50.0)) is None


def _brightness_named_as_undone(model: Any, fragment: np.ndarray) -> None:
    for scale, direction in ((1.5, "brighter"), (0.5, "darker")):
        shift = check_intensity(model, _affine(fragment, scale), name="scan.tif")
        assert shift is not None and shift.directions[0] == direction, (scale, shift)
        assert shift.message.startswith(f"volume scan.tif is {direction} than the model's training data")
        assert "undoes a global brightness change" in shift.remedy
        assert "--normalization zscore" not in shift.remedy  # it already is one
        assert "higher contrast" not in shift.directions  # raw contrast scales with brightness: ignored


def test_quiet_on_other_volumes_of_the_training_distribution(
    fragments: dict[int, np.ndarray], profile: IntensityProfile
) -> None:
    for normalization in (SCALE, ZSCORE, PERCENTILE):
        model = _model(profile, normalization)
        for seed in range(4, 12):
            assert check_intensity(model, fragments[seed]) is None, seed


def test_a_uint16_volume_is_compared_after_the_models_conversion(
    fragments: dict[int, np.ndarray], profile: IntensityProfile
) -> None:
    as_uint16 = fragments[5].astype(np.uint16) * np.uint16(257)  # what the intensity rule maps back to uint8
    brighter16 = _affine(fragments[5], 1.5).astype(np.uint16) * np.uint16(257)
    as_float = fragments[5].astype(np.float32) / 255
    for normalization in (SCALE, ZSCORE, PERCENTILE):  # per-volume models: on the training dtype's range
        model = _model(profile, normalization)
        assert check_intensity(model, as_uint16) is None, normalization.kind
        assert check_intensity(model, as_float) is None, normalization.kind
        assert "brighter" in check_intensity(model, brighter16).directions, normalization.kind


def test_quiet_inside_a_randomised_training_set() -> None:
    synthetic = pytest.importorskip("napari_vesuvius.core.synthetic")
    if not hasattr(synthetic, "randomised_fragment"):
        pytest.skip("randomised_fragment not available")
    shape = (64, 64, 64)
    broad = training_profile([synthetic.randomised_fragment(shape, seed=s).image for s in range(16)])
    for normalization in (SCALE, ZSCORE):
        for seed in range(100, 106):
            image = synthetic.randomised_fragment(shape, seed=seed).image
            assert check_intensity(_model(broad, normalization), image) is None, seed


def test_nnunet_foreground_properties(fragments: dict[int, np.ndarray]) -> None:
    plans = {"mean": 118.25, "median": 117.0, "std": 41.5, "percentile_00_5": 14.0, "percentile_99_5": 231.0}
    ct = Normalization(kind="ct", mean=118.25, std=41.5, lower=14.0, upper=231.0)
    model = _model({**plans, "source": NNUNET_SOURCE}, ct)
    assert check_intensity(model, fragments[4]) is None  # papyrus ≈ 130: within the foreground spread
    brighter = check_intensity(model, _affine(fragments[4], 1.6))
    assert brighter is not None and brighter.directions == ("brighter",)
    assert "training foreground" in brighter.message and "units" in brighter.remedy
    darker = check_intensity(model, _affine(fragments[4], 0.3))
    assert darker is not None and darker.directions == ("darker",)
    # a z-score nnU-Net model undoes the brightness itself: told, with the remedy saying so
    zscore = check_intensity(_model({**plans, "source": NNUNET_SOURCE}, ZSCORE), _affine(fragments[4], 1.6))
    assert zscore is not None and zscore.directions == ("brighter",)
    assert "undoes a global brightness change" in zscore.remedy


def test_nnunet_plans_properties_are_read_without_loading_the_networks(tmp_path: Path) -> None:
    from napari_vesuvius.core.inference._nnunet_plans import training_intensity_from_plans
    from nnunet_fixtures import CT_PROPERTIES, make_plans

    recorded = training_intensity_from_plans(make_plans())["training_intensity"]
    assert recorded["source"] == NNUNET_SOURCE
    assert all(recorded[k] == CT_PROPERTIES[k] for k in ("mean", "median", "std", "percentile_99_5"))
    assert (
        training_intensity_from_plans({"foreground_intensity_properties_per_channel": {"0": {"mean": "x"}}})
        == {}
    )
    folder = tmp_path / "nnUNetTrainer__nnUNetResEncUNetMPlans__3d_fullres"
    folder.mkdir()
    (folder / "plans.json").write_text(json.dumps(make_plans()))
    reference = intensity_reference(folder)
    assert reference is not None and reference.normalization.kind == "ct"
    assert reference.metadata["training_intensity"] == recorded
    assert intensity_reference(tmp_path / "missing.pt") is None  # loading reports it; the check is skipped


@pytest.mark.slow
def test_loaded_nnunet_models_carry_their_plans_properties(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    pytest.importorskip("dynamic_network_architectures")
    from napari_vesuvius.core.inference.nnunet import load_nnunet_model
    from nnunet_fixtures import CT_PROPERTIES, make_nnunet_model_folder

    folder = make_nnunet_model_folder(
        tmp_path, patch_size=(16, 16, 16), folds=(0,), n_stages=2, base_features=4
    )
    recorded = load_nnunet_model(folder).metadata["training_intensity"]
    assert recorded["source"] == NNUNET_SOURCE and recorded["median"] == CT_PROPERTIES["median"]


# --------------------------------------------------------------------------------- training and CLI
@pytest.mark.slow
def test_a_training_run_records_the_profile_in_every_checkpoint(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.progress import run_job
    from napari_vesuvius.core.synthetic import write_training_folder
    from napari_vesuvius.core.training import rundir
    from napari_vesuvius.core.training.config import TrainConfig
    from napari_vesuvius.core.training.runner import train

    data = write_training_folder(tmp_path / "ds", (40, 40, 40), seeds=(0, 1, 2))
    config = TrainConfig(
        epochs=1, iterations_per_epoch=1, patch_size=(16, 16, 16), batch_size=1, data=(str(data),),
        model_preset="tiny", val_patches=1, torch_threads=1, choose_postprocess=False,
    )  # fmt: skip
    run_job(train(config, tmp_path / "run"))
    for name in (rundir.CHECKPOINT_BEST, rundir.CHECKPOINT_LAST):
        model = load_model(tmp_path / "run" / name)
        recorded = IntensityProfile.from_dict(model.metadata["training_intensity"])
        assert recorded.source == "training" and recorded.volumes >= 1 and recorded.dtype == "uint8"
    assert intensity_reference(tmp_path / "run" / rundir.CHECKPOINT_BEST).metadata["training_intensity"]


def test_cli_predict_prints_the_warning_and_never_fails(
    tmp_path: Path, fragments: dict[int, np.ndarray], profile: IntensityProfile, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("torch")
    import tifffile

    from napari_vesuvius.cli.main import main
    from napari_vesuvius.core.inference.checkpoint import update_checkpoint_metadata

    model = tmp_path / "model.pt"
    assert (
        main(["init-model", "--preset", "tiny", "--patch-size", "16", "16", "16", "--output", str(model)])
        == 0
    )
    update_checkpoint_metadata(model, {"training_intensity": profile.to_dict()})
    crop = (slice(0, 40),) * 3
    tifffile.imwrite(tmp_path / "bright.tif", _affine(fragments[4], 1.5)[crop])
    tifffile.imwrite(tmp_path / "usual.tif", fragments[4][crop])
    common = ["predict", "--model", str(model), "--quiet", "--device", "cpu", "--tta", "0"]
    capsys.readouterr()
    assert main([*common, "--input", str(tmp_path / "bright.tif"), "--output", str(tmp_path / "b.tif")]) == 0
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "bright.tif is brighter than the model's training data" in err
    assert "what to do:" in err and (tmp_path / "b.tif").exists()
    args = [
        "--input",
        str(tmp_path / "bright.tif"),
        "--output",
        str(tmp_path / "c.tif"),
        "--no-intensity-check",
    ]
    assert main([*common, *args]) == 0
    assert "brighter" not in capsys.readouterr().err
    assert main([*common, "--input", str(tmp_path / "usual.tif"), "--output", str(tmp_path / "u.tif")]) == 0
    assert "warning:" not in capsys.readouterr().err
