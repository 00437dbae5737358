"""The offline ``submit`` pipeline end to end: synthetic challenge folder, tiny random models, the zip."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.cli.main import main
from napari_vesuvius.core.errors import CancelledError
from napari_vesuvius.core.export import read_submission
from napari_vesuvius.core.postprocess import PostprocessConfig, run_pipeline, scan_mask_from_ct
from napari_vesuvius.core.progress import run_job

#: two volumes of 32×40×36 with a 32³ patch: 4 tiles each, one batch of 4
SHAPE = (32, 40, 36)
CONFIG = PostprocessConfig(threshold_mode="hysteresis", t_low=0.45, t_high=0.6, dust_size=5)


def _save_tiny(path: Path, seed: int) -> Path:
    import torch

    from napari_vesuvius.core.inference.checkpoint import save_checkpoint
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, preset

    torch.manual_seed(seed)
    config = preset("tiny", features_base=4, features_max=16)  # fewer channels: fast tests
    return save_checkpoint(
        path, build_unet(config), config, Normalization(), (32, 32, 32), {"note": "random"}
    )


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    from napari_vesuvius.core.synthetic import write_challenge_dataset

    root = tmp_path_factory.mktemp("submit")
    layout = write_challenge_dataset(root / "data", n_train=0, n_test=2, shape=SHAPE, seed=5)
    models = [_save_tiny(root / "a.pt", 0), _save_tiny(root / "b.pt", 1)]
    config = CONFIG.save(root / "config.json")
    return layout, models, config


def _reference(image: Path, members, config: PostprocessConfig = CONFIG) -> np.ndarray:
    """The mask computed directly with the core calls the pipeline chains."""
    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.volume.io import open_volume

    with open_volume(image) as volume:
        ct = np.asarray(volume.data)
    prob = predict(ct, members, batch_size=4, device="cpu", precision="fp32").probability
    return run_pipeline(prob, config, scan_mask=scan_mask_from_ct(ct)).astype(np.uint8)


def test_submit_cli_end_to_end_with_a_weighted_ensemble(setup, tmp_path, capsys):
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.inference.model_api import WeightedModel

    layout, (model_a, model_b), config = setup
    out = tmp_path / "submission.zip"
    code = main([
        "submit", "--model", str(model_a), "--model", str(model_b), "--weight", "2",
        "--data", str(layout.root), "--postprocess", str(config), "--out", str(out),
        "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--quiet",
    ])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    ids = [str(vid) for vid in layout.test_ids]
    assert all(vid in printed for vid in ids) and "2 volume(s)" in printed and "verified" in printed
    with zipfile.ZipFile(out) as archive:
        assert sorted(archive.namelist()) == sorted(f"{vid}.tif" for vid in ids)  # test ids only
    back = read_submission(out)
    members = [WeightedModel(load_model(model_a), 1.0), WeightedModel(load_model(model_b), 2.0)]
    for vid in ids:
        assert back[vid].dtype == np.uint8 and back[vid].shape == SHAPE
        assert set(np.unique(back[vid])) <= {0, 1}
    first = layout.test_ids[0]  # one reference volume is enough (and halves the test's cost)
    np.testing.assert_array_equal(back[str(first)], _reference(layout.test_image(first), members))
    assert any(mask.any() for mask in back.values())  # not trivially empty


def test_submit_fails_with_exit_1_and_keeps_the_earlier_zip(setup, tmp_path, capsys):
    import shutil

    layout, (model_a, _), _ = setup
    data = tmp_path / "data"
    shutil.copytree(layout.root, data)
    missing = layout.test_ids[0]
    (data / "test_images" / f"{missing}.tif").unlink()
    out = tmp_path / "submission.zip"
    out.write_bytes(b"earlier")
    argv = ["submit", "--model", str(model_a), "--data", str(data), "--out", str(out), "--overwrite"]
    code = main([*argv, "--quiet"])
    assert code == 1
    err = capsys.readouterr().err
    assert f"error: id {missing}: test image" in err and "is missing (listed in" in err
    assert out.read_bytes() == b"earlier"


def test_weight_must_follow_a_model(setup):
    _, (model_a, _), _ = setup
    with pytest.raises(SystemExit):
        main(["submit", "--weight", "2", "--model", str(model_a), "--data", "x"])


def test_cancelled_submit_leaves_no_partial_zip(setup, tmp_path):
    from napari_vesuvius.core.export.submit import iter_submit
    from napari_vesuvius.core.inference.models import ModelSpec

    layout, (model_a, _), _ = setup
    out = tmp_path / "submission.zip"
    out.write_bytes(b"earlier")
    reports = []
    job = iter_submit(layout.root, [ModelSpec(model_a)], out, CONFIG, device="cpu", precision="fp32")
    with pytest.raises(CancelledError):
        run_job(job, reports.append, lambda: "predict" in reports[-1].message)
    assert out.read_bytes() == b"earlier"
    assert [p.name for p in tmp_path.iterdir()] == ["submission.zip"]


def test_without_a_config_submit_uses_the_clean_up_the_model_stored(setup, tmp_path, capsys):
    import shutil

    from napari_vesuvius.core.inference.checkpoint import update_checkpoint_metadata
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.postprocess.choice import METADATA_KEY, PostprocessChoice

    layout, (model_a, _), _ = setup
    own = PostprocessConfig(t_low=0.42, t_high=0.55, closing_z=0, closing_xy=0, dust_size=5)
    model = shutil.copy(model_a, tmp_path / "trained.pt")
    update_checkpoint_metadata(model, {METADATA_KEY: PostprocessChoice(own, 0.7, 0.6, ("v",)).to_metadata()})
    out = tmp_path / "submission.zip"
    code = main([
        "submit", "--model", str(model), "--data", str(layout.root), "--out", str(out),
        "--batch-size", "4", "--device", "cpu", "--precision", "fp32", "--quiet",
    ])  # fmt: skip
    assert code == 0
    assert "used the model's own clean-up" in capsys.readouterr().err
    first = layout.test_ids[0]
    expected = _reference(layout.test_image(first), load_model(model), own)
    np.testing.assert_array_equal(read_submission(out)[str(first)], expected)
    assert not np.array_equal(expected, _reference(layout.test_image(first), load_model(model), CONFIG))
