"""Training data: sources and split, patch sampler statistics, augmentation alignment."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.core.errors import DatasetError, VolumeError
from napari_vesuvius.core.inference.model_api import Normalization
from napari_vesuvius.core.labels import IGNORE
from napari_vesuvius.core.training.augment import mirror_rotate, sample_spatial, warp_patch
from napari_vesuvius.core.training.config import AugmentConfig, TrainConfig, TrainConfigError
from napari_vesuvius.core.training.data import VolumeSource, sources_from_folder, split_sources
from napari_vesuvius.core.training.sampler import PatchSampler, TrainingVolume, crop_padded
from napari_vesuvius.core.volume.io import write_volume


def _write_pair(folder: Path, name: str, image: np.ndarray, label: np.ndarray) -> VolumeSource:
    (folder / "train_images").mkdir(parents=True, exist_ok=True)
    (folder / "train_labels").mkdir(parents=True, exist_ok=True)
    write_volume(folder / "train_images" / f"{name}.tif", image)
    write_volume(folder / "train_labels" / f"{name}.tif", label)
    image_path, label_path = folder / "train_images" / f"{name}.tif", folder / "train_labels" / f"{name}.tif"
    return VolumeSource(name, image_path, label_path)


def _sparse_volume(shape: tuple[int, int, int] = (64, 64, 64)) -> tuple[np.ndarray, np.ndarray]:
    """A small surface blob in a mostly background volume with a thick ignore slab on top."""
    rng = np.random.default_rng(0)
    image = rng.integers(1, 255, shape, dtype=np.uint8)
    label = np.zeros(shape, np.uint8)
    label[40:43, 40:44, 40:44] = 1
    label[:20] = IGNORE
    return image, label


def test_sampler_oversamples_foreground_about_a_third_and_never_returns_all_ignore(tmp_path: Path) -> None:
    image, label = _sparse_volume()
    source = _write_pair(tmp_path, "a", image, label)
    sampler = PatchSampler([TrainingVolume(source, Normalization())], (16, 16, 16), 1 / 3, None)
    rng = np.random.default_rng(1)
    with_surface = 0
    draws = 600
    for _ in range(draws):
        img, lab = sampler.sample(rng)
        assert img.shape == lab.shape == (16, 16, 16) and img.dtype == np.float32
        assert np.any(lab != IGNORE)
        with_surface += bool(np.any(lab == 1))
    # a random 16³ patch holds the blob with probability < 0.05; forced ones always do
    assert 0.28 < with_surface / draws < 0.42


def test_sampler_pads_volumes_smaller_than_the_patch(tmp_path: Path) -> None:
    image = np.full((6, 10, 10), 100, np.uint8)
    label = np.zeros((6, 10, 10), np.uint8)
    label[3, 4:6, 4:6] = 1
    source = _write_pair(tmp_path, "small", image, label)
    sampler = PatchSampler([TrainingVolume(source, Normalization())], (8, 16, 16), 0.5, None)
    img, lab = sampler.sample(np.random.default_rng(0))
    assert img.shape == (8, 16, 16)
    assert np.count_nonzero(lab != IGNORE) == image.size  # every real voxel, padding is ignore
    assert np.count_nonzero(img == Normalization().apply(np.uint8(100))) == image.size


def test_crop_padded_matches_numpy_pad() -> None:
    array = np.arange(5 * 6 * 7).reshape(5, 6, 7)
    padded = np.pad(array, 10, constant_values=-1)
    for start in ([-3, 2, 4], [0, 0, 0], [3, -1, 5]):
        got = crop_padded(array, start, (4, 4, 4), -1)
        s = [v + 10 for v in start]
        assert np.array_equal(got, padded[s[0] : s[0] + 4, s[1] : s[1] + 4, s[2] : s[2] + 4])


def test_augmentation_keeps_image_and_label_aligned() -> None:
    """Where the image encodes its own label, every spatial augmentation must keep them equal."""
    rng = np.random.default_rng(3)
    label = np.zeros((24, 24, 24), np.uint8)
    label[5:15, 3:9, 10:20] = 1
    label[16:20, 12:22, 2:8] = 1
    image = label.astype(np.float32) * 200 + 20
    cfg = AugmentConfig(permute_axes=True, p_rotate=1.0, p_scale=1.0)
    for _ in range(10):
        img, lab = mirror_rotate(image, label, rng, cfg)
        assert np.array_equal(img > 120, lab == 1)
        matrix = sample_spatial(rng, cfg)
        assert matrix is not None
        centre = (np.asarray(label.shape) - 1) / 2
        warped_img, warped_lab = warp_patch(image, label, matrix, centre, (16, 16, 16))
        inside = warped_lab != IGNORE
        agree = (warped_img[inside] > 120) == (warped_lab[inside] == 1)
        assert agree.mean() > 0.97  # only voxels on the interpolated boundary may differ


def test_sampler_with_augmentation_gives_normalised_float_patches(tmp_path: Path) -> None:
    image, label = _sparse_volume((40, 40, 40))
    source = _write_pair(tmp_path, "a", image, label)
    sampler = PatchSampler([TrainingVolume(source, Normalization())], (16, 16, 16), 1 / 3, AugmentConfig())
    images, labels = sampler.batch(np.random.default_rng(0), 4)
    assert images.shape == (4, 1, 16, 16, 16) and labels.shape == (4, 16, 16, 16)
    assert np.isfinite(images).all() and set(np.unique(labels)) <= {0, 1, 2}
    again, _ = sampler.batch(np.random.default_rng(0), 4)
    assert np.array_equal(images, again)  # a batch is a pure function of its seed


def test_bad_labels_are_rejected_naming_the_file(tmp_path: Path) -> None:
    image, label = _sparse_volume((16, 16, 16))
    label[0, 0, 0] = 7
    source = _write_pair(tmp_path, "bad", image, label)
    with pytest.raises(VolumeError, match=r"bad\.tif.*0, 1 or 2"):
        TrainingVolume(source, Normalization()).load()
    all_ignore = _write_pair(tmp_path, "empty", image, np.full_like(label, IGNORE))
    with pytest.raises(VolumeError, match="every voxel is ignore"):
        TrainingVolume(all_ignore, Normalization()).load()


def test_split_holds_out_whole_scrolls_or_a_fraction() -> None:
    sources = [
        VolumeSource(str(i), Path(f"{i}.tif"), Path(f"{i}.tif"), "s1" if i < 6 else "s2") for i in range(8)
    ]
    train, val, note = split_sources(sources, 0.25, seed=0)
    assert {s.scroll for s in val} == {"s2"} and {s.scroll for s in train} == {"s1"}
    assert "scroll" in note
    single = [replace(s, scroll=None) for s in sources]
    train, val, _ = split_sources(single, 0.25, seed=0)
    assert len(val) == 2 and len(train) == 6 and not {s.id for s in val} & {s.id for s in train}
    train, val, note = split_sources(single[:1], 0.25, seed=0)
    assert val == [] and "training volumes" in note
    train, val, _ = split_sources(single, 0.25, seed=0, val_ids=["3"])
    assert [s.id for s in val] == ["3"]
    with pytest.raises(DatasetError, match="not in the training data"):
        split_sources(single, 0.25, seed=0, val_ids=["99"])


def test_sources_from_folders(tmp_path: Path) -> None:
    image, label = _sparse_volume((16, 16, 16))
    _write_pair(tmp_path / "ds", "7", image, label)
    (tmp_path / "ds" / "train.csv").write_text("id,scroll_id\n7,34117\n")
    (source,) = sources_from_folder(tmp_path / "ds")
    assert source.id == "7" and source.scroll == "34117"
    _write_pair(tmp_path / "run" / "data", "layer", image, label)
    assert [s.id for s in sources_from_folder(tmp_path / "run")] == ["layer"]
    (tmp_path / "plain" / "images").mkdir(parents=True)
    (tmp_path / "plain" / "labels").mkdir()
    write_volume(tmp_path / "plain" / "images" / "x.tif", image)
    with pytest.raises(DatasetError, match="no label for image"):
        sources_from_folder(tmp_path / "plain")
    with pytest.raises(DatasetError, match="not training data"):
        sources_from_folder(tmp_path / "plain" / "images")


def test_config_validation_and_round_trip() -> None:
    config = TrainConfig(epochs=3, iterations_per_epoch=5, patch_size=(32, 32, 32), batch_size=2, data=("d",))
    resolved = config.resolved()
    assert resolved.lr == 1e-2 and resolved.weight_decay == 3e-5
    assert TrainConfig.from_dict(resolved.to_dict()) == resolved
    assert resolved.differences(replace(resolved, epochs=4)) == ["epochs: 3 -> 4"]
    assert resolved.differences(replace(resolved, loader_threads=4)) == []
    with pytest.raises(TrainConfigError, match="epochs must be at least 1"):
        replace(config, epochs=0)
    with pytest.raises(TrainConfigError, match="unknown training settings"):
        TrainConfig.from_dict({**config.to_dict(), "epoch": 3})


def test_challenge_folder_skips_absent_csv_ids_and_lists_every_half_pair(tmp_path: Path) -> None:
    image, label = _sparse_volume((16, 16, 16))
    for name in ("1", "2", "3"):
        _write_pair(tmp_path / "ds", name, image, label)
    (tmp_path / "ds" / "train.csv").write_text("id,scroll_id\n1,a\n2,a\n3,b\n4,b\n")  # 4: no file at all
    with pytest.warns(UserWarning, match=r"train\.csv: 1 listed id\(s\) have no volume in train_images/: 4"):
        assert [s.id for s in sources_from_folder(tmp_path / "ds")] == ["1", "2", "3"]
    (tmp_path / "ds" / "train_labels" / "2.tif").unlink()
    (tmp_path / "ds" / "train_images" / "3.tif").unlink()
    with pytest.warns(UserWarning), pytest.raises(DatasetError) as info:
        sources_from_folder(tmp_path / "ds")
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'ds'}: 2 problem(s):")
    assert "train_labels/2.tif: missing label for training id '2'" in message
    assert "train_images/3.tif: missing image for training id '3'" in message


def test_training_volumes_follow_the_intensity_rule(tmp_path: Path) -> None:
    """A uint8-range model fine-tuned on a uint16 ×257 or float /255 copy sees the same normalised voxels
    (announced), and a float volume outside [0, 1] or with NaN is refused naming the file."""
    from napari_vesuvius.core.errors import VesuviusWarning

    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (8, 8, 8), dtype=np.uint8)
    label = (rng.random((8, 8, 8)) > 0.7).astype(np.uint8)
    write_volume(tmp_path / "l.tif", label)
    norm = Normalization()  # the built-in models' fixed uint8 scaling, input range [0, 255]

    def normalised(name: str, data: np.ndarray) -> np.ndarray:
        write_volume(tmp_path / name, data)
        volume = TrainingVolume(VolumeSource(name, tmp_path / name, tmp_path / "l.tif"), norm)
        return volume.fitted_normalization.apply(volume.image)

    reference = normalised("u8.tif", image)
    with pytest.warns(VesuviusWarning, match=r"u16\.tif: intensities converted for training: uint16"):
        np.testing.assert_allclose(normalised("u16.tif", image.astype(np.uint16) * 257), reference, atol=1e-5)
    with pytest.warns(VesuviusWarning, match="float32 values in"):
        np.testing.assert_allclose(normalised("f.tif", image.astype(np.float32) / 255), reference, atol=1e-5)
    with pytest.raises(VolumeError, match=r"big\.tif: float intensities must lie in \[0, 1\]"):
        normalised("big.tif", image.astype(np.float32))
    nan = image.astype(np.float32) / 255
    nan[3, 2, 1] = np.nan
    with pytest.raises(VolumeError, match=r"nan\.tif: contains NaN or infinite values \(first at z=3\)"):
        normalised("nan.tif", nan)
