"""Intensity augmentation against nnU-Net v2's default pipeline: the new transforms, draws, settings."""

from __future__ import annotations

import json
from dataclasses import asdict, fields, replace
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from napari_vesuvius.core.inference.model_api import Normalization
from napari_vesuvius.core.training.augment import (
    augment_intensity,
    contrast,
    gamma,
    mirror_rotate,
    sample_around_one,
    sample_spatial,
    simulate_low_resolution,
)
from napari_vesuvius.core.training.config import (
    AugmentConfig,
    TrainConfig,
    TrainConfigError,
    load_config,
    save_config,
)
from napari_vesuvius.core.training.data import VolumeSource
from napari_vesuvius.core.training.sampler import PatchSampler, TrainingVolume
from napari_vesuvius.core.volume.io import write_volume

INTENSITY_PROBABILITIES = (
    "p_noise", "p_blur", "p_brightness", "p_shift", "p_contrast",
    "p_low_resolution", "p_invert_gamma", "p_gamma",
)  # fmt: skip


def _only(**probabilities: float) -> AugmentConfig:
    """No augmentation except the given probabilities."""
    return replace(AugmentConfig.none(), **probabilities)


def _patch(shape: tuple[int, ...] = (32, 32, 32), seed: int = 0) -> np.ndarray:
    """Sheet-like structure plus fine noise, z-scored: a normalised training patch."""
    rng = np.random.default_rng(seed)
    y = np.arange(shape[1], dtype=np.float32)[None, :, None]
    sheets = np.cos(2 * np.pi * y / 8.0) * np.ones(shape, np.float32)
    image = sheets + rng.normal(0.0, 0.5, shape).astype(np.float32)
    return ((image - image.mean()) / image.std()).astype(np.float32)


def _high_frequency_energy(image: np.ndarray) -> float:
    return float(np.mean(ndimage.laplace(image.astype(np.float64)) ** 2))


def _skewness(image: np.ndarray) -> float:
    centred = image.astype(np.float64) - image.mean()
    return float(np.mean(centred**3) / np.mean(centred**2) ** 1.5)


def test_low_resolution_keeps_the_shape_and_statistics_but_loses_fine_detail() -> None:
    image = _patch((32, 30, 28))
    for zoom in (0.5, 0.7):
        out = simulate_low_resolution(image, zoom)
        assert out.shape == image.shape and out.dtype == np.float32
        assert abs(float(out.mean()) - float(image.mean())) < 0.1
        assert 0.5 < float(out.std()) / float(image.std()) <= 1.05
        assert _high_frequency_energy(out) < 0.5 * _high_frequency_energy(image)
        # the sheets (period 8 voxels, coarser than the grid) survive: strongly correlated with the input
        assert np.corrcoef(out.ravel(), ndimage.uniform_filter(image, 3).ravel())[0, 1] > 0.7
    smoother = simulate_low_resolution(image, 0.5)
    assert _high_frequency_energy(smoother) < _high_frequency_energy(simulate_low_resolution(image, 0.8))
    assert simulate_low_resolution(image, 1.0) is image  # nothing to simulate at full resolution


def test_low_resolution_equals_batchgeneratorsv2() -> None:
    torch = pytest.importorskip("torch")
    low_resolution = pytest.importorskip("batchgeneratorsv2.transforms.spatial.low_resolution")
    image = _patch((20, 33, 17), seed=3)
    for zoom in (0.5, 0.63, 0.9):
        transform = low_resolution.SimulateLowResolutionTransform(zoom, False, True, None)
        theirs = transform(image=torch.from_numpy(image.copy())[None])["image"][0].numpy()
        assert np.allclose(simulate_low_resolution(image, zoom), theirs, atol=1e-5)


def test_inverted_gamma_keeps_mean_and_std_and_bends_the_other_way() -> None:
    image = _patch(seed=1)
    for g in (0.7, 1.5):
        plain, inverted = gamma(image, g), -gamma(-image, g)
        for out in (plain, inverted):
            assert out.shape == image.shape
            assert abs(float(out.mean()) - float(image.mean())) < 1e-4
            assert abs(float(out.std()) - float(image.std())) < 1e-4
            order = np.argsort(image.ravel())  # both are monotonic increasing maps of the intensities
            assert np.all(np.diff(out.ravel()[order]) >= -1e-5)
    # gamma > 1 stretches the bright tail (skew up); on the inverted image it stretches the dark tail
    assert _skewness(gamma(image, 1.5)) > _skewness(image) + 0.1
    assert _skewness(-gamma(-image, 1.5)) < _skewness(image) - 0.1
    # as maps of the intensity: plain gamma 1.5 is convex, inverted gamma 1.5 concave (sorted values)
    grid = np.linspace(-2.0, 2.0, 101, dtype=np.float32)
    assert np.all(np.diff(gamma(grid, 1.5), 2) > -1e-6) and np.all(np.diff(-gamma(-grid, 1.5), 2) < 1e-6)


def test_gamma_and_contrast_equal_batchgeneratorsv2() -> None:
    torch = pytest.importorskip("torch")
    gamma_module = pytest.importorskip("batchgeneratorsv2.transforms.intensity.gamma")
    contrast_module = pytest.importorskip("batchgeneratorsv2.transforms.intensity.contrast")
    image = _patch(seed=2)

    def theirs(transform: object) -> np.ndarray:
        return transform(image=torch.from_numpy(image.copy())[None])["image"][0].numpy()  # type: ignore[operator]

    for invert in (0, 1):
        reference = theirs(gamma_module.GammaTransform(1.4, invert, False, 1, 1))
        ours = -gamma(-image, 1.4) if invert else gamma(image, 1.4)
        assert np.allclose(ours, reference, atol=1e-4)
    reference = theirs(contrast_module.ContrastTransform(0.6, True, False, 1))
    assert np.allclose(contrast(image, 0.6), reference, atol=1e-5)


def test_blur_draws_a_sigma_per_axis() -> None:
    """Anisotropic blur: the smoothing (neighbour correlation) differs between axes within one patch."""
    noise = np.random.default_rng(0).normal(size=(40, 40, 40)).astype(np.float32)
    cfg = _only(p_blur=1.0)
    spreads = []
    for seed in range(10):
        out = augment_intensity(noise, np.random.default_rng(seed), cfg)
        correlation = [
            np.corrcoef(np.take(out, range(39), axis=a).ravel(), np.take(out, range(1, 40), axis=a).ravel())[
                0, 1
            ]
            for a in range(3)
        ]
        spreads.append(max(correlation) - min(correlation))
    assert np.median(spreads) > 0.05


def test_factors_are_drawn_below_and_above_one_equally() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([sample_around_one(rng, (0.7, 1.5)) for _ in range(4000)])
    assert draws.min() >= 0.7 and draws.max() <= 1.5
    assert abs(float(np.mean(draws < 1.0)) - 0.5) < 0.03  # uniform over 0.7-1.5 would give 0.375
    one_sided = np.array([sample_around_one(rng, (1.1, 1.3)) for _ in range(200)])
    assert one_sided.min() >= 1.1 and one_sided.max() <= 1.3


@pytest.mark.parametrize("name", INTENSITY_PROBABILITIES)
def test_each_transform_fires_with_its_probability(name: str) -> None:
    image = _patch((12, 12, 12))
    p = getattr(AugmentConfig(), name)
    cfg = replace(_only(**{name: p}), low_resolution_zoom=(0.5, 0.9))  # a zoom that always changes 12 voxels
    rng = np.random.default_rng(0)
    draws = 1500
    fired = sum(not np.array_equal(augment_intensity(image, rng, cfg), image) for _ in range(draws))
    assert abs(fired / draws - p) < 4 * np.sqrt(p * (1 - p) / draws) + 1e-9


def test_intensity_augmentation_is_deterministic_per_seed_and_leaves_its_input_alone() -> None:
    image = _patch()
    kept = image.copy()
    cfg = _only(**{name: 1.0 for name in INTENSITY_PROBABILITIES})
    first = augment_intensity(image, np.random.default_rng(7), cfg)
    assert np.array_equal(first, augment_intensity(image, np.random.default_rng(7), cfg))
    assert not np.array_equal(first, augment_intensity(image, np.random.default_rng(8), cfg))
    assert np.array_equal(image, kept) and first.dtype == np.float32 and np.isfinite(first).all()


def test_none_means_no_augmentation() -> None:
    cfg = AugmentConfig.none()
    assert all(getattr(cfg, f.name) == 0.0 for f in fields(cfg) if f.name.startswith("p_"))
    image, label = _patch(), np.zeros((32, 32, 32), np.uint8)
    rng = np.random.default_rng(0)
    assert sample_spatial(rng, cfg) is None
    mirrored, same_label = mirror_rotate(image, label, rng, cfg)
    assert np.array_equal(mirrored, image) and np.array_equal(same_label, label)
    assert np.array_equal(augment_intensity(image, rng, cfg), image)


def test_intensity_augmentation_leaves_labels_untouched(tmp_path: Path) -> None:
    """Same seeds with and without intensity augmentation: identical labels, different images."""
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, (40, 40, 40), dtype=np.uint8)
    label = (rng.random((40, 40, 40)) < 0.1).astype(np.uint8)
    for kind, array in (("images", image), ("labels", label)):
        (tmp_path / kind).mkdir()
        write_volume(tmp_path / kind / "a.tif", array)
    source = VolumeSource("a", tmp_path / "images" / "a.tif", tmp_path / "labels" / "a.tif")
    volume = TrainingVolume(source, Normalization())
    plain = PatchSampler([volume], (16, 16, 16), 1 / 3, AugmentConfig.none())
    augmented = PatchSampler(
        [volume], (16, 16, 16), 1 / 3, _only(**{n: 1.0 for n in INTENSITY_PROBABILITIES})
    )
    for seed in range(3):
        image_a, label_a = plain.sample(np.random.default_rng(seed))
        image_b, label_b = augmented.sample(np.random.default_rng(seed))
        assert np.array_equal(label_a, label_b) and not np.array_equal(image_a, image_b)


def test_defaults_are_at_least_as_strong_as_nnunet() -> None:
    """Every probability at least nnU-Net's, every range containing nnU-Net's."""
    ours, theirs = AugmentConfig(), AugmentConfig.nnunet()
    for f in fields(AugmentConfig):
        mine, reference = getattr(ours, f.name), getattr(theirs, f.name)
        if f.name.startswith("p_") or f.name in ("max_rotation_deg", "shift_range"):
            assert mine >= reference, f.name
        elif f.name.endswith(("_range", "_sigma", "_zoom", "_variance")):
            assert mine[0] <= reference[0] and mine[1] >= reference[1], f.name
    assert (theirs.p_low_resolution, theirs.p_invert_gamma, theirs.p_gamma) == (0.125, 0.1, 0.3)
    assert ours.p_low_resolution == 0.25 and ours.low_resolution_zoom == (0.5, 1.0)
    assert ours.brightness_range[0] <= 0.5 and ours.brightness_range[1] >= 1.6


def test_config_of_an_older_run_loads_and_resumes_without_the_new_transforms(tmp_path: Path) -> None:
    """An old config.json lacks the new fields: it loads, keeps its ranges and adds no transform."""
    old_augment = asdict(AugmentConfig())
    for name in ("p_low_resolution", "low_resolution_zoom", "p_invert_gamma"):
        del old_augment[name]
    old_augment |= {
        "brightness_range": [0.75, 1.25],
        "contrast_range": [0.75, 1.25],
        "blur_sigma": [0.5, 1.0],
    }
    settings = TrainConfig(
        epochs=1, iterations_per_epoch=1, patch_size=(16, 16, 16), batch_size=1, data=("d",)
    )
    path = tmp_path / "config.json"
    path.write_text(json.dumps(settings.to_dict() | {"augment": json.loads(json.dumps(old_augment))}))
    loaded = load_config(path)
    assert loaded.augment.brightness_range == (0.75, 1.25) and loaded.augment.blur_sigma == (0.5, 1.0)
    assert loaded.augment.p_low_resolution == 0.0 and loaded.augment.p_invert_gamma == 0.0
    assert loaded.augment.low_resolution_zoom == AugmentConfig().low_resolution_zoom
    save_config(loaded, path)  # stored again (as a resumed run does): now complete, and it loads the same
    assert load_config(path) == loaded and loaded.differences(load_config(path)) == []
    # settings given now (a partial dict, as --permute-axes builds) get today's defaults instead
    given = TrainConfig(**{**asdict(settings), "augment": {"permute_axes": True}})
    assert given.augment.p_low_resolution == 0.25 and given.augment.p_invert_gamma == 0.1
    # a stored run of today keeps its new transforms
    save_config(settings, path)
    assert load_config(path).augment == AugmentConfig()


def test_bad_augmentation_settings_name_the_field(tmp_path: Path) -> None:
    with pytest.raises(TrainConfigError, match="p_low_resolution must be a probability"):
        AugmentConfig(p_low_resolution=1.5)
    with pytest.raises(TrainConfigError, match="low_resolution_zoom must lie in"):
        AugmentConfig.from_dict({"low_resolution_zoom": [0.0, 1.0]})
    with pytest.raises(TrainConfigError, match="brightness_range must be"):
        AugmentConfig.from_dict({"brightness_range": [1.6, 0.5]})
    with pytest.raises(TrainConfigError, match="unknown augmentation settings"):
        AugmentConfig.from_dict({"p_elastic": 0.2})
