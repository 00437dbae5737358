"""nnU-Net v2 import: model folders, safe checkpoint loading, plans checks and parity with nnUNetPredictor."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.ndimage import binary_fill_holes

pytest.importorskip("dynamic_network_architectures")
torch = pytest.importorskip("torch")

from napari_vesuvius.core.errors import CheckpointError, VesuviusError  # noqa: E402
from napari_vesuvius.core.inference._safe_unpickle import load_nnunet_checkpoint  # noqa: E402
from napari_vesuvius.core.inference.nnunet import (  # noqa: E402
    NnUNetPlansError,
    OptionalDependencyError,
    find_folds,
    load_nnunet_model,
)
from nnunet_fixtures import CT_PROPERTIES, make_nnunet_model_folder  # noqa: E402

PATCH = (8, 12, 16)  # anisotropic on purpose: catches axis-order mistakes; tiny to keep tests fast
MIRROR_AXES = (0, 2)  # what the trainer allowed; nnU-Net's predictor mirrors over exactly these


@pytest.fixture(scope="module")
def model_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nnunet_results")
    return make_nnunet_model_folder(
        root, patch_size=PATCH, folds=(0, 1), base_features=4, n_stages=2, mirror_axes=MIRROR_AXES
    )


def _copy_folder(folder: Path, dest: Path, folds: tuple[int, ...] = (0,)) -> Path:
    """A copy with plans/dataset json and some folds, to edit without touching the shared fixture."""
    target = dest / folder.parent.name / folder.name
    target.mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        shutil.copy(folder / name, target / name)
    for fold in folds:
        shutil.copytree(folder / f"fold_{fold}", target / f"fold_{fold}")
    return target


def _edit_json(path: Path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def _logits(network, seed: int = 0) -> torch.Tensor:
    x = torch.randn((1, 1, *PATCH), generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return network(x)


# ------------------------------------------------------------------------------------------ loading


def test_loads_all_folds_with_plans_settings(model_folder: Path) -> None:
    model = load_nnunet_model(model_folder)
    assert len(model.networks) == 2
    assert model.patch_size == PATCH
    assert model.num_classes == 2  # background + surface; the ignore label is not a class
    assert model.surface_class == 1
    norm = model.normalization
    assert (norm.kind, norm.mean, norm.std) == ("ct", CT_PROPERTIES["mean"], CT_PROPERTIES["std"])
    assert (norm.lower, norm.upper) == (CT_PROPERTIES["percentile_00_5"], CT_PROPERTIES["percentile_99_5"])
    assert model.metadata["folds"] == [0, 1]
    assert model.metadata["configuration"] == "3d_fullres"
    assert model.metadata["allowed_mirroring_axes"] == MIRROR_AXES
    assert _logits(model.networks[0]).shape == (1, 2, *PATCH)
    assert not torch.allclose(_logits(model.networks[0]), _logits(model.networks[1]))
    assert find_folds(model_folder) == [0, 1]


def test_weights_match_the_checkpoint_and_checkpoint_choice(model_folder: Path) -> None:
    final = load_nnunet_model(model_folder, folds=[1])
    best = load_nnunet_model(model_folder, folds=(1,), checkpoint="checkpoint_best.pth")
    assert final.metadata["folds"] == [1] and len(final.networks) == 1
    stored = torch.load(
        model_folder / "fold_1" / "checkpoint_best.pth", map_location="cpu", weights_only=False
    )
    for key, value in best.networks[0].state_dict().items():
        assert torch.equal(value, stored["network_weights"][key]), key
    assert not torch.allclose(_logits(final.networks[0]), _logits(best.networks[0]))


def test_missing_fold_is_a_clear_error(model_folder: Path) -> None:
    with pytest.raises(
        CheckpointError, match=r"fold\(s\) 3 have no checkpoint_final.pth \(folds with it: 0, 1\)"
    ):
        load_nnunet_model(model_folder, folds=(0, 3))
    with pytest.raises(CheckpointError, match=r"no fold_\*/nope\.pth"):
        load_nnunet_model(model_folder, checkpoint="nope.pth")


def test_dataset_folder_instead_of_model_folder(model_folder: Path) -> None:
    with pytest.raises(CheckpointError, match="choose one of its model folders: nnUNetTrainer__"):
        load_nnunet_model(model_folder.parent)


def test_load_model_dispatches_to_nnunet(model_folder: Path) -> None:
    from napari_vesuvius.core.inference.loading import load_model

    model = load_model(model_folder, folds=[0])
    assert model.metadata["source"] == "nnunetv2" and len(model.networks) == 1


def test_missing_dependency_names_the_extra(model_folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "dynamic_network_architectures", None)
    with pytest.raises(OptionalDependencyError, match=r"napari-vesuvius\[nnunet\]"):
        load_nnunet_model(model_folder)


def test_plain_conv_unet_and_zscore(tmp_path: Path) -> None:
    folder = make_nnunet_model_folder(
        tmp_path, patch_size=(16, 16, 16), folds=(0,), normalization="ZScoreNormalization",
        network="PlainConvUNet", base_features=4, n_stages=2,
    )  # fmt: skip
    model = load_nnunet_model(folder)
    assert type(model.networks[0]).__name__ == "PlainConvUNet"
    assert model.normalization.kind == "zscore"
    volume = np.random.default_rng(0).integers(0, 200, (8, 9, 10)).astype(np.uint8)
    fitted = model.normalization.fit(volume)
    assert fitted.mean == pytest.approx(volume.mean()) and fitted.std == pytest.approx(volume.std())

    _edit_json(
        folder / "plans.json", lambda p: p["configurations"]["3d_fullres"].update(use_mask_for_norm=[True])
    )
    masked = load_nnunet_model(folder).normalization
    assert masked.kind == "zscore" and masked.use_mask
    fitted = masked.fit(volume)
    in_mask = binary_fill_holes(volume != 0)  # nnU-Net's mask: enclosed zeros count
    assert np.any(in_mask & (volume == 0))
    statistics = volume[in_mask].astype(np.float64)
    assert fitted.mean == pytest.approx(statistics.mean()) and fitted.std == pytest.approx(statistics.std())
    inside = volume[volume != 0].astype(np.float64)
    out = fitted.apply(volume)
    assert np.all(out[volume == 0] == 0)
    np.testing.assert_allclose(
        out[volume != 0], (inside - statistics.mean()) / statistics.std(), rtol=1e-5, atol=1e-5
    )


def test_legacy_network_class_path_is_found(model_folder: Path, tmp_path: Path) -> None:
    """Plans from older nnU-Net name ``...architectures.residual_unet.ResidualEncoderUNet``."""
    folder = _copy_folder(model_folder, tmp_path)
    old = "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet"
    arch = ("configurations", "3d_fullres", "architecture")
    _edit_json(folder / "plans.json", lambda p: p[arch[0]][arch[1]][arch[2]].update(network_class_name=old))
    assert type(load_nnunet_model(folder).networks[0]).__name__ == "ResidualEncoderUNet"


def test_transposed_plans_take_tiles_in_volume_order(model_folder: Path, tmp_path: Path) -> None:
    """With ``transpose_forward`` the network sees permuted tiles; the model takes (Z, Y, X) tiles."""
    folder = _copy_folder(model_folder, tmp_path)
    _edit_json(
        folder / "plans.json", lambda p: p.update(transpose_forward=[2, 0, 1], transpose_backward=[1, 2, 0])
    )
    model = load_nnunet_model(folder)
    # the plans' patch is in network order (axes 2, 0, 1 of the volume): (8, 12, 16) → volume (12, 16, 8)
    assert model.patch_size == (12, 16, 8)
    assert model.metadata["allowed_mirroring_axes"] == (1, 2)  # network axes (0, 2) → volume axes (2, 1)
    tile = torch.randn((1, 1, *model.patch_size), generator=torch.Generator().manual_seed(1))
    wrapped = model.networks[0]
    with torch.no_grad():
        expected = wrapped.inner(tile.permute(0, 1, 4, 2, 3)).permute(0, 1, 3, 4, 2)
        torch.testing.assert_close(wrapped(tile), expected)
    assert wrapped(tile).shape == (1, 2, *model.patch_size)


# ------------------------------------------------------------------------------------- plans checks

UNSUPPORTED = {
    "2d": (lambda p, d: None, "2d", "is 2D; only 3D configurations are supported"),
    "norm": (
        lambda p, d: p["configurations"]["3d_fullres"].update(normalization_schemes=["MyFancyNormalization"]),
        None,
        "normalization scheme 'MyFancyNormalization' is not supported",
    ),
    "cascade": (
        lambda p, d: p["configurations"].update(
            {"3d_cascade_fullres": {"inherits_from": "3d_fullres", "previous_stage": "3d_lowres"}}
        ),
        "3d_cascade_fullres",
        "cascade stage",
    ),
    "lowres": (
        lambda p, d: p["configurations"]["3d_fullres"].update(spacing=[2.0, 2.0, 2.0]),
        None,
        r"resamples images to spacing \[2.0, 2.0, 2.0\]",
    ),
    "channels": (
        lambda p, d: d["channel_names"].update({"1": "CT2"}),
        None,
        "takes 2 input channels",
    ),
    "regions": (
        lambda p, d: d.update(labels={"background": 0, "surface": [1, 2]}, regions_class_order=[1]),
        None,
        "region-based training",
    ),
    "class outside allow-list": (
        lambda p, d: p["configurations"]["3d_fullres"]["architecture"].update(network_class_name="os.system"),
        None,
        "network_class_name: refusing class name 'os.system'",
    ),
    "kwarg outside allow-list": (
        lambda p, d: p["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(
            nonlin="subprocess.Popen"
        ),
        None,
        r"arch_kwargs\['nonlin'\]: refusing class name 'subprocess.Popen'",
    ),
}


@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_plans_are_refused(model_folder: Path, tmp_path: Path, case: str) -> None:
    edit, configuration, message = UNSUPPORTED[case]
    folder = _copy_folder(model_folder, tmp_path)
    plans, dataset = (json.loads((folder / n).read_text()) for n in ("plans.json", "dataset.json"))
    edit(plans, dataset)
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(json.dumps(dataset))
    with pytest.raises(NnUNetPlansError, match=message) as info:
        load_nnunet_model(folder, configuration=configuration)
    assert str(info.value).startswith(str(folder))  # names plans.json or dataset.json in the folder
    assert isinstance(info.value, VesuviusError)


def test_corrupt_plans_and_mismatched_weights(model_folder: Path, tmp_path: Path) -> None:
    folder = _copy_folder(model_folder, tmp_path)
    (folder / "plans.json").write_text("{not json")
    with pytest.raises(NnUNetPlansError, match=r"plans\.json: not valid JSON"):
        load_nnunet_model(folder)
    shutil.copy(model_folder / "plans.json", folder / "plans.json")
    _edit_json(
        folder / "plans.json",
        lambda p: p["configurations"]["3d_fullres"]["architecture"]["arch_kwargs"].update(
            features_per_stage=[2, 4]
        ),
    )
    with pytest.raises(CheckpointError, match=r"checkpoint_final\.pth: weights do not match .*: wrong shape"):
        load_nnunet_model(folder)


# ---------------------------------------------------------------------------------- safe unpickling


class _Payload:
    """A class no allow-list knows: unpickling it would run arbitrary module code."""

    def __init__(self) -> None:
        self.value = 1


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _checkpoint_with(folder: Path, extra: object) -> Path:
    path = folder / "fold_0" / "checkpoint_final.pth"
    checkpoint = torch.load(path, map_location="cpu", weights_only=False)
    checkpoint["logging"]["extra"] = extra
    torch.save(checkpoint, path)
    return path


@pytest.mark.parametrize("kind", ["custom class", "os.system reduce"])
def test_malicious_checkpoint_is_refused(model_folder: Path, tmp_path: Path, kind: str) -> None:
    folder = _copy_folder(model_folder, tmp_path / "copy")
    marker = tmp_path / "pwned"
    path = _checkpoint_with(folder, _Payload() if kind == "custom class" else _Exploit(marker))
    with pytest.raises(CheckpointError, match=r"refused to load.*allow-list") as info:
        load_nnunet_model(folder)
    assert str(info.value).startswith(str(path))
    assert ("system" in str(info.value)) if kind != "custom class" else ("_Payload" in str(info.value))
    assert not marker.exists()


def test_real_checkpoint_contents_are_allowed(model_folder: Path) -> None:
    payload = load_nnunet_checkpoint(model_folder / "fold_0" / "checkpoint_final.pth")
    assert isinstance(payload["_best_ema"], np.float64)
    assert isinstance(payload["logging"]["train_losses"][0], np.float32)
    assert payload["init_args"]["device"] == torch.device("cuda")
    assert payload["init_args"]["plans"]["plans_name"] == "nnUNetResEncUNetMPlans"


def test_checkpoint_written_with_numpy_1_is_allowed(tmp_path: Path) -> None:
    """numpy 1.x pickles scalars as ``numpy.core.multiarray.scalar`` (numpy 2: ``numpy._core``)."""
    import pickle
    import types

    class LegacyNumpyPickler(pickle._Pickler):  # type: ignore[name-defined]
        def save_global(self, obj, name=None):
            if obj is np._core.multiarray.scalar:
                self.write(pickle.GLOBAL + b"numpy.core.multiarray\nscalar\n")
                self.memoize(obj)
                return
            super().save_global(obj, name)

    path = tmp_path / "checkpoint_final.pth"
    checkpoint = {"network_weights": {"w": torch.ones(2)}, "_best_ema": np.float64(0.75)}
    torch.save(
        checkpoint, path, pickle_module=types.SimpleNamespace(Pickler=LegacyNumpyPickler, __name__="legacy")
    )
    payload = load_nnunet_checkpoint(path)
    assert payload["_best_ema"] == 0.75 and isinstance(payload["_best_ema"], np.float64)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    bad = tmp_path / "checkpoint_final.pth"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        load_nnunet_checkpoint(bad)
    torch.save({"state_dict": {}}, bad)
    with pytest.raises(CheckpointError, match="no 'network_weights'"):
        load_nnunet_checkpoint(bad)


# ------------------------------------------------------------------------ parity with nnUNetPredictor

# Measured here (patch 8×12×16, 2 folds, step 0.5, Gaussian): max |Δp| on the interior (2 voxels away from
# the faces) 5.0e-4 without and 2.9e-4 with 8-flip mirroring; 6.3e-4 at patch 32³ (3 voxels away). The
# difference is nnU-Net's fp16 accumulation of logits and Gaussian weights on CPU; at the faces its
# Gaussian weights underflow in fp16 and the difference grows to ~0.1-0.2, hence the interior comparison.
PARITY_ATOL = 1.5e-3
PARITY_MARGIN = 2


def _nnunet_probability(folder: Path, volume: np.ndarray, *, mirroring: bool) -> np.ndarray:
    """Surface probability from nnU-Net v2's own predictor (CPU, fp16 accumulation as it does)."""
    predictor_module = pytest.importorskip("nnunetv2.inference.predict_from_raw_data")
    predictor = predictor_module.nnUNetPredictor(
        tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring, perform_everything_on_device=False,
        device=torch.device("cpu"), verbose=False, verbose_preprocessing=False, allow_tqdm=False,
    )  # fmt: skip
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0, 1))
    image = volume[None].astype(np.float32)  # (channels, Z, Y, X)
    _, probabilities = predictor.predict_single_npy_array(
        image, {"spacing": [1.0, 1.0, 1.0]}, None, None, True
    )
    return probabilities[1]


@pytest.mark.parametrize(
    ("shape", "mirroring"),
    [
        ((12, 18, 24), False),
        ((6, 18, 24), False),  # z smaller than the patch: padded as nnU-Net pads
        ((12, 12, 24), True),  # mirroring over the allowed axes (0, 2)
    ],
)
@pytest.mark.slow  # importing nnunetv2 alone takes seconds
def test_matches_nnunet_predictor(model_folder: Path, shape: tuple[int, int, int], mirroring: bool) -> None:
    pytest.importorskip("nnunetv2")
    from napari_vesuvius.core.inference.engine import predict

    # no zero voxels: nnU-Net crops to the non-zero bounding box, the engine zeroes air instead
    volume = np.random.default_rng(7).integers(1, 256, size=shape).astype(np.uint8)
    reference = _nnunet_probability(model_folder, volume, mirroring=mirroring)
    assert reference.std() > 0.02  # random weights give spread-out probabilities, not saturated ones
    result = predict(
        volume, load_nnunet_model(model_folder), step=0.5, gaussian=True,
        tta_axes=MIRROR_AXES if mirroring else (), batch_size=2, device="cpu", precision="fp32",
        output_dtype="float32",
    )  # fmt: skip
    ours = np.asarray(result.probability)
    assert ours.shape == shape
    interior = tuple(slice(PARITY_MARGIN, s - PARITY_MARGIN) for s in shape)
    difference = np.abs(ours - reference)
    assert difference[interior].max() <= PARITY_ATOL, difference[interior].max()
    assert difference.mean() <= 1e-3  # the faces differ only where nnU-Net's fp16 weights underflow


def test_left_out_folds_are_reported(model_folder: Path, tmp_path: Path) -> None:
    """Folds without the chosen checkpoint, or with odd names, are named in a warning, never dropped."""
    from napari_vesuvius.core.errors import VesuviusWarning

    folder = _copy_folder(model_folder, tmp_path, folds=(0, 1))
    (folder / "fold_1" / "checkpoint_final.pth").unlink()  # only checkpoint_best.pth left
    (folder / "fold_x").mkdir()
    with pytest.warns(VesuviusWarning) as record:
        model = load_nnunet_model(folder)
    assert model.metadata["folds"] == [0]
    message = str(record[0].message)
    assert message.startswith(str(folder))
    assert "fold_1 has no checkpoint_final.pth (it has checkpoint_best.pth)" in message
    assert "fold_x is not a fold name" in message
    assert "ensembling fold(s) 0" in message
    (folder / "fold_0" / "checkpoint_final.pth").unlink()
    with pytest.raises(CheckpointError, match=r"no fold_\*/checkpoint_final\.pth found .*fold_1 has no"):
        load_nnunet_model(folder)


def test_fold_with_nan_weights_is_refused(model_folder: Path, tmp_path: Path) -> None:
    """A fold checkpoint whose weights hold NaN would predict NaN everywhere: refused, naming the file."""
    folder = _copy_folder(model_folder, tmp_path, folds=(0,))
    path = folder / "fold_0" / "checkpoint_final.pth"
    payload = load_nnunet_checkpoint(path)
    name = next(iter(payload["network_weights"]))
    payload["network_weights"][name] = torch.full_like(payload["network_weights"][name], float("nan"))
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="NaN or infinite") as info:
        load_nnunet_model(folder)
    assert str(info.value).startswith(str(path))
