"""``TrainConfig.normalization``: validated, resolved before the run, stored, and applied to each training
volume exactly as inference applies the checkpoint's normalisation."""

from __future__ import annotations

import argparse
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.core.inference.model_api import Normalization
from napari_vesuvius.core.training.config import TrainConfig, TrainConfigError, load_config, save_config
from napari_vesuvius.core.training.data import VolumeSource
from napari_vesuvius.core.training.sampler import TrainingVolume
from napari_vesuvius.core.volume.io import write_volume

BASE = dict(epochs=1, iterations_per_epoch=1, patch_size=(16, 16, 16), batch_size=1, data=("d",))


def _disc(shape: tuple[int, int, int] = (12, 24, 24), seed: int = 0) -> np.ndarray:
    """uint8 CT inside a disc about the z axis, air (0) around it."""
    rng = np.random.default_rng(seed)
    _z, y, x = np.indices(shape)
    inside = (y - shape[1] / 2) ** 2 + (x - shape[2] / 2) ** 2 < (0.4 * shape[1]) ** 2
    return np.where(inside, rng.integers(1, 256, shape), 0).astype(np.uint8)


def test_choices_are_validated_and_auto_resolves_before_the_run() -> None:
    from napari_vesuvius.core.training.model import auto_normalization

    assert TrainConfig(**BASE).normalization == "auto"
    with pytest.raises(TrainConfigError, match="must be one of auto, scale, zscore, percentile"):
        TrainConfig(**BASE, normalization="minmax")
    resolved = TrainConfig(**BASE).resolved()
    assert resolved.normalization == auto_normalization() == "percentile"  # config.json holds the choice made
    assert TrainConfig.from_dict(resolved.to_dict()) == resolved
    assert TrainConfig(**BASE, normalization="scale").resolved().normalization == "scale"
    assert TrainConfig(**BASE, init="model.pt").resolved().normalization == "auto"  # the init model's own
    assert resolved.differences(replace(resolved, normalization="scale")) == [
        "normalization: 'percentile' -> 'scale'"
    ]


def test_a_config_json_without_the_field_resumes_as_it_was_trained(tmp_path: Path) -> None:
    from napari_vesuvius.core.training.model import default_normalization

    path = tmp_path / "config.json"
    save_config(TrainConfig(**BASE).resolved(), path)
    data = json.loads(path.read_text())
    del data["normalization"]  # a run folder from before the setting existed
    path.write_text(json.dumps(data))
    old = load_config(path)
    assert old.normalization == "legacy" and old.resolved().normalization == "legacy"
    assert default_normalization(np.dtype(np.uint8), old.normalization) == Normalization()
    legacy16 = default_normalization(np.dtype(np.uint16), old.normalization)
    assert legacy16.kind == "zscore" and not legacy16.use_mask


def test_default_normalization_of_each_choice() -> None:
    from napari_vesuvius.core.training.model import default_normalization

    for dtype in (np.uint8, np.uint16, np.float32):
        for choice, kind in (("auto", "percentile"), ("percentile", "percentile"), ("zscore", "zscore")):
            chosen = default_normalization(np.dtype(dtype), choice)
            assert chosen.kind == kind and chosen.use_mask and chosen.input_range is None
        assert default_normalization(np.dtype(dtype), "scale") == Normalization()  # uint8 range, converted


def test_fine_tuning_keeps_the_init_models_normalisation(tmp_path: Path) -> None:
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.unet import build_unet, preset
    from napari_vesuvius.core.training.model import build_training_model

    config = preset("tiny", features_base=4, features_max=16)
    torch.manual_seed(0)
    init = save_checkpoint(tmp_path / "scale.pt", build_unet(config), config, Normalization(), (16,) * 3, {})
    settings = TrainConfig(**BASE, model_preset="tiny", init=str(init))
    for choice in ("auto", "scale"):
        model = build_training_model(replace(settings, normalization=choice), np.dtype(np.uint8))
        assert model.normalization == Normalization()
    with pytest.raises(TrainConfigError, match="fine-tuning keeps it"):
        build_training_model(replace(settings, normalization="zscore"), np.dtype(np.uint8))
    fresh = build_training_model(TrainConfig(**BASE, model_preset="tiny").resolved(), np.dtype(np.uint8))
    assert fresh.normalization.kind == "percentile" and fresh.normalization.use_mask


def test_training_volumes_are_normalised_as_inference_fits_them(tmp_path: Path) -> None:
    """The sampler fits each volume with ``Normalization.fit`` (the call of every inference path): the
    statistics of the scanned region, the same whatever air surrounds the scan."""
    image = _disc()
    label = (np.random.default_rng(1).random(image.shape) > 0.8).astype(np.uint8)
    wide = np.pad(image, ((0, 0), (16, 16), (16, 16)))  # the same scan with much more air around it
    norm = Normalization(kind="zscore", mean=0.0, std=1.0, input_range=None, use_mask=True)
    fitted = []
    for name, data in (("a", image), ("b", wide)):
        write_volume(tmp_path / f"{name}.tif", data)
        write_volume(tmp_path / f"{name}_l.tif", np.zeros_like(data) if name == "b" else label)
        source = VolumeSource(name, tmp_path / f"{name}.tif", tmp_path / f"{name}_l.tif")
        volume = TrainingVolume(source, norm)
        assert volume.fitted_normalization == norm.fit(data)
        fitted.append(volume.fitted_normalization)
        out = volume.fitted_normalization.apply(volume.image)
        assert np.all(out[data == 0] == 0)  # air stays 0, as at inference (and in padding)
    assert fitted[0].mean == pytest.approx(fitted[1].mean) and fitted[0].std == pytest.approx(fitted[1].std)
    scanned = image[image > 0].astype(np.float64)
    assert fitted[0].mean == pytest.approx(scanned.mean()) and fitted[0].std == pytest.approx(scanned.std())


def test_cli_option_reaches_the_config(tmp_path: Path) -> None:
    from napari_vesuvius.cli import train as train_cli

    parser = argparse.ArgumentParser()
    train_cli.register(parser.add_subparsers())
    argv = ["train", "--run-dir", str(tmp_path / "run"), "--data", str(tmp_path), "--epochs", "1"]
    argv += ["--iterations-per-epoch", "1"]
    assert train_cli._build_config(parser.parse_args(argv)).normalization == "auto"
    assert (
        train_cli._build_config(parser.parse_args([*argv, "--normalization", "scale"])).normalization
        == "scale"
    )
    with pytest.raises(SystemExit):
        parser.parse_args([*argv, "--normalization", "legacy"])  # never offered


def test_train_form_choice_reaches_the_config(make_napari_viewer, tmp_path: Path) -> None:
    from napari_vesuvius.widgets._train_form import SETTING_NAMES, TrainForm

    form = TrainForm(make_napari_viewer())
    assert "normalization" in SETTING_NAMES and form.normalization in list(form.schedule_section.body)
    form.data_folder.value = tmp_path
    assert form.build_config().normalization == "auto"
    form.normalization.value = "scale"
    assert form.build_config().normalization == "scale"
