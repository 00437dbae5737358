"""Crafted checkpoints: every bad field is a CheckpointError naming the file and the field, on load.

Each case takes a good checkpoint's payload, changes one field and saves it again; loading (and, for
description fields, reading the info) must refuse it cleanly: no IndexError/TypeError traceback, no
model that silently predicts garbage (std 0, NaN weights, a surface class the network does not have).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from inference_helpers import TEST_CONFIG, scan_volume, tiny_network
from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import CheckpointError
from napari_vesuvius.core.inference.checkpoint import (
    load_checkpoint,
    read_checkpoint_info,
    save_checkpoint,
    save_nnunet_checkpoint,
)
from napari_vesuvius.core.inference.engine import predict
from napari_vesuvius.core.inference.model_api import Normalization


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "good.pt"
    return save_checkpoint(path, tiny_network(), TEST_CONFIG, Normalization(), (16, 16, 16))


def _crafted(good: Path, tmp_path: Path, change: Any) -> Path:
    payload = torch.load(good, weights_only=True)
    change(payload)
    path = tmp_path / "crafted.pt"
    torch.save(payload, path)
    return path


def _set(*keys: str, value: Any) -> Any:
    def change(payload: dict[str, Any]) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return change


def _delete(*keys: str) -> Any:
    def change(payload: dict[str, Any]) -> None:
        target = payload
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return change


def _poison(name_part: str, value: float) -> Any:
    def change(payload: dict[str, Any]) -> None:
        name = next(n for n in payload["state_dict"] if name_part in n and payload["state_dict"][n].ndim > 1)
        payload["state_dict"][name] = payload["state_dict"][name].clone()
        payload["state_dict"][name].view(-1)[0] = value

    return change


# case → (change, words the message must contain, checked already by read_checkpoint_info)
DESCRIPTION_CASES: dict[str, tuple[Any, str]] = {
    "surface_class out of range": (_set("surface_class", value=5), "surface_class"),
    "surface_class negative": (_set("surface_class", value=-1), "surface_class"),
    "surface_class a string": (_set("surface_class", value="1"), "surface_class"),
    "surface_class a bool": (_set("surface_class", value=True), "surface_class"),
    "std zero": (_set("normalization", "std", value=0.0), "std must be positive"),
    "std negative": (_set("normalization", "std", value=-2.0), "std must be positive"),
    "std NaN": (_set("normalization", "std", value=math.nan), "std must be finite"),
    "mean infinite": (_set("normalization", "mean", value=math.inf), "mean must be finite"),
    "mean a string": (_set("normalization", "mean", value="127"), "mean must be a number"),
    "unknown kind": (_set("normalization", "kind", value="minmax"), "unknown normalization kind 'minmax'"),
    "unknown normalization field": (_set("normalization", "gamma", value=2.0), "gamma"),
    "normalization not a dict": (_set("normalization", value=[1, 2]), "normalization"),
    "ct without bounds": (_set("normalization", "kind", value="ct"), "lower and upper"),
    "input_range reversed": (_set("normalization", "input_range", value=[255.0, 0.0]), "input_range"),
    "input_range a string": (_set("normalization", "input_range", value="uint8"), "input_range"),
    "patch_size 2D": (_set("patch_size", value=[16, 16]), "patch_size"),
    "patch_size zero": (_set("patch_size", value=[0, 16, 16]), "patch_size"),
    "patch_size huge": (_set("patch_size", value=[16, 16, 4096]), "patch_size"),
    "patch_size strings": (_set("patch_size", value=["16", 16, 16]), "patch_size"),
    "patch_size not divisible": (_set("patch_size", value=[16, 16, 18]), "patch_size"),
    "num_classes one": (_set("config", "num_classes", value=1), "config.num_classes"),
    "num_classes huge": (_set("config", "num_classes", value=10**6), "config.num_classes"),
    "n_stages huge": (_set("config", "n_stages", value=10**6), "config.n_stages"),
    "features a string": (_set("config", "features_base", value="4"), "config.features_base"),
    "features huge": (_set("config", "features_max", value=10**7), "config.features_max"),
    "three input channels": (_set("config", "in_channels", value=3), "config.in_channels"),
    "stride zero": (_set("config", "strides", value=[[1, 1, 1], [0, 2, 2], [2, 2, 2]]), "config.strides"),
    "deep_supervision a string": (_set("config", "deep_supervision", value="yes"), "deep_supervision"),
    "negative_slope NaN": (_set("config", "negative_slope", value=math.nan), "negative_slope"),
    "unknown config field": (_set("config", "attention", value=True), "attention"),
    "config not a dict": (_set("config", value="tiny"), "config"),
    "metadata a string": (_set("metadata", value="trained"), "metadata"),
    "format_version a string": (_set("format_version", value="1"), "format_version"),
    "unknown architecture": (_set("architecture", value="SwinUNETR"), "SwinUNETR"),
    "patch_size missing": (_delete("patch_size"), "patch_size"),
}

WEIGHT_CASES: dict[str, tuple[Any, str]] = {
    "NaN weight": (_poison("weight", math.nan), "NaN or infinite"),
    "infinite weight": (_poison("weight", math.inf), "NaN or infinite"),
    "wrong shape": (lambda p: p["state_dict"].update({next(iter(p["state_dict"])): torch.zeros(3)}), "shape"),
    "missing tensor": (lambda p: p["state_dict"].pop(next(iter(p["state_dict"]))), "missing"),
    "extra tensor": (lambda p: p["state_dict"].update({"extra.weight": torch.zeros(2)}), "unexpected"),
    "not a tensor": (lambda p: p["state_dict"].update({"extra": [1.0, 2.0]}), "not a named tensor"),
    "empty state_dict": (_set("state_dict", value={}), "state_dict"),
}


@pytest.mark.parametrize("case", sorted(DESCRIPTION_CASES))
def test_crafted_description_is_refused_naming_file_and_field(good: Path, tmp_path: Path, case: str) -> None:
    change, words = DESCRIPTION_CASES[case]
    path = _crafted(good, tmp_path, change)
    for load in (read_checkpoint_info, load_checkpoint):
        with pytest.raises(CheckpointError) as info:
            load(path)
        message = str(info.value)
        assert message.startswith(str(path)) and words in message, message


@pytest.mark.parametrize("case", sorted(WEIGHT_CASES))
def test_crafted_weights_are_refused(good: Path, tmp_path: Path, case: str) -> None:
    change, words = WEIGHT_CASES[case]
    path = _crafted(good, tmp_path, change)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(str(path)) and words in str(info.value), str(info.value)


def test_untouched_checkpoint_still_loads_and_predicts_finite(good: Path) -> None:
    model = load_checkpoint(good)
    assert model.surface_class == 1 and model.normalization.input_range == (0.0, 255.0)
    probability = predict(scan_volume((16, 16, 16)), model, device="cpu", precision="fp32").probability
    assert np.isfinite(probability.astype(np.float32)).all()


def test_predict_cli_reports_a_crafted_checkpoint_in_one_line(
    good: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tifffile

    path = _crafted(good, tmp_path, _set("surface_class", value=7))
    tifffile.imwrite(tmp_path / "ct.tif", scan_volume((16, 16, 16)))
    argv = [
        "predict",
        "--model",
        str(path),
        "--input",
        str(tmp_path / "ct.tif"),
        "--output",
        str(tmp_path / "p.tif"),
    ]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith(f"error: {path}") and "surface_class" in err[-1]
    assert "Traceback" not in "\n".join(err)
    assert not (tmp_path / "p.tif").exists()


def test_normalization_is_checked_wherever_it_is_built() -> None:
    with pytest.raises(ValueError, match="std must be positive"):
        Normalization(std=0.0)
    with pytest.raises(ValueError, match="unknown normalization kind"):
        Normalization(kind="bogus")  # type: ignore[arg-type]
    assert Normalization(kind="zscore").input_range is None  # z-score never converts intensities
    assert Normalization.from_dict({"kind": "scale", "mean": 1.0, "std": 2.0}).input_range == (0.0, 255.0)


# ------------------------------------------------------------------------------ nnunet-dynamic form
@pytest.fixture(scope="module")
def nnunet_good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("dynamic_network_architectures")
    import json

    from napari_vesuvius.core.inference.nnunet import load_nnunet_model
    from nnunet_fixtures import make_nnunet_model_folder

    root = tmp_path_factory.mktemp("nnunet")
    folder = make_nnunet_model_folder(root, patch_size=(8, 8, 8), folds=(0,), base_features=4, n_stages=2)
    model = load_nnunet_model(folder)
    arch = json.loads((folder / "plans.json").read_text())["configurations"]["3d_fullres"]["architecture"]
    path = root / "fine_tuned.pt"
    description = {"architecture": arch, "num_classes": 2}
    return save_nnunet_checkpoint(path, model.networks[0], description, model.normalization, (8, 8, 8))


NNUNET_CASES: dict[str, tuple[Any, str]] = {
    "num_classes missing": (_delete("nnunet", "num_classes"), "nnunet.num_classes"),
    "num_classes a string": (_set("nnunet", "num_classes", value="2"), "nnunet.num_classes"),
    "num_classes one": (_set("nnunet", "num_classes", value=1), "nnunet.num_classes"),
    "two input channels": (_set("nnunet", "in_channels", value=2), "nnunet.in_channels"),
    "masked_normalization a string": (
        _set("nnunet", "masked_normalization", value="no"),
        "masked_normalization",
    ),
    "architecture not a dict": (_set("nnunet", "architecture", value="UNet"), "architecture"),
    "surface_class out of range": (_set("surface_class", value=2), "surface_class"),
    "ct std zero": (_set("normalization", "std", value=0.0), "std must be positive"),
    "ct upper below lower": (_set("normalization", "upper", value=-1e9), "above upper"),
    "patch_size negative": (_set("patch_size", value=[8, -8, 8]), "patch_size"),
    "NaN weight": (_poison("weight", math.nan), "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(NNUNET_CASES))
def test_crafted_nnunet_dynamic_checkpoint_is_refused(nnunet_good: Path, tmp_path: Path, case: str) -> None:
    change, words = NNUNET_CASES[case]
    path = _crafted(nnunet_good, tmp_path, change)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert str(info.value).startswith(str(path)) and words in str(info.value), str(info.value)


def test_untouched_nnunet_dynamic_checkpoint_loads(nnunet_good: Path) -> None:
    model = load_checkpoint(nnunet_good)
    assert model.num_classes == 2 and model.normalization.kind == "ct"
    assert model.normalization.input_range is None  # CT statistics are in the data's own units
