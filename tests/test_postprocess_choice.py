"""Choosing a model's clean-up on labelled volumes, storing it with the checkpoint, and reading it back."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from napari_vesuvius.core.metric import score_volume
from napari_vesuvius.core.postprocess import ConfigError, PostprocessConfig, run_pipeline
from napari_vesuvius.core.postprocess.choice import (
    CLOSING_GRID,
    METADATA_KEY,
    T_LOW_GRID,
    PostprocessChoice,
    checkpoint_choice,
    common_config,
    iter_choose_postprocess,
    model_postprocess,
)
from napari_vesuvius.core.progress import run_job

SHAPE = (24, 40, 40)


def _two_sheets_with_fog() -> tuple[np.ndarray, np.ndarray]:
    """Two flat sheets 6 voxels apart, confidently predicted (0.95), with a 0.4 'fog' bridging them:
    the default T_low 0.30 keeps the fog and merges the sheets; T_low above 0.4 separates them."""
    label = np.zeros(SHAPE, np.uint8)
    label[:, 16, 4:36] = 1
    label[:, 22, 4:36] = 1
    probability = np.full(SHAPE, 0.02, np.float32)
    probability[label == 1] = 0.95
    probability[:, 17:22, 14:20] = 0.4  # the bridge
    label[:2] = 2  # an ignored slab: never scored
    return probability, label


def test_choice_raises_t_low_above_a_merging_fog_and_scores_better() -> None:
    probability, label = _two_sheets_with_fog()
    choice = run_job(iter_choose_postprocess([("fog", probability, label)]))
    assert choice.changed and choice.config.t_low > 0.4
    assert choice.score >= choice.base_score + 0.005
    assert len(choice.tried) == len(T_LOW_GRID) * len(CLOSING_GRID)
    # the recorded scores are what the pipeline and the metric give for that setting
    expected = score_volume(run_pipeline(probability, choice.config), label).score
    assert choice.score == pytest.approx(expected, abs=1e-9)
    base = score_volume(run_pipeline(probability, PostprocessConfig()), label).score
    assert choice.base_score == pytest.approx(base, abs=1e-9)


def test_the_base_config_stays_unless_another_setting_gains_enough() -> None:
    probability, label = _two_sheets_with_fog()
    base = PostprocessConfig(dust_size=7)
    kept = run_job(iter_choose_postprocess([("fog", probability, label)], base, min_gain=1.0))
    assert kept.config == base and kept.score == kept.base_score and not kept.changed
    best = run_job(iter_choose_postprocess([("fog", probability, label)], base, min_gain=0.0))
    assert best.score == max(row["score"] for row in best.tried)
    assert best.config.dust_size == 7  # only T_low and the closing are chosen


def test_choice_needs_hysteresis() -> None:
    probability, label = _two_sheets_with_fog()
    absolute = PostprocessConfig(threshold_mode="absolute")
    with pytest.raises(ConfigError, match="needs hysteresis"):
        run_job(iter_choose_postprocess([("fog", probability, label)], absolute))


def test_metadata_round_trip_and_malformed_entries() -> None:
    choice = PostprocessChoice(PostprocessConfig(t_low=0.55, closing_z=0, closing_xy=0), 0.8, 0.7, ("a",))
    assert PostprocessChoice.from_metadata(choice.to_metadata()) == choice
    with pytest.raises(ConfigError, match=r"model\.pt"):
        PostprocessChoice.from_metadata({"score": 1.0}, "model.pt")
    with pytest.raises(ConfigError, match="t_low"):
        PostprocessChoice.from_metadata({"config": {"t_low": 3.0}}, "model.pt")


class _Model:
    def __init__(self, choice: PostprocessChoice | None) -> None:
        self.metadata = {} if choice is None else {METADATA_KEY: choice.to_metadata()}


def test_model_postprocess_uses_a_common_choice_else_the_defaults() -> None:
    own = PostprocessChoice(PostprocessConfig(t_low=0.6, closing_z=0, closing_xy=0), 0.8, 0.7, ("v",))
    other = dataclasses.replace(own, config=PostprocessConfig(t_low=0.4))
    config, source = model_postprocess([_Model(own)])
    assert config == own.config and "model's own" in source
    assert model_postprocess([_Model(own), _Model(own)])[0] == own.config
    config, source = model_postprocess([_Model(own), _Model(other)])
    assert config == PostprocessConfig() and "chose different" in source
    assert model_postprocess([_Model(None)]) == (PostprocessConfig(), "built-in defaults")
    assert common_config([own, None]) is None and common_config([]) is None


def test_stored_choice_is_read_from_the_checkpoint_and_weights_are_unchanged(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    from napari_vesuvius.core.errors import CheckpointError
    from napari_vesuvius.core.inference.checkpoint import save_checkpoint, update_checkpoint_metadata
    from napari_vesuvius.core.inference.model_api import Normalization
    from napari_vesuvius.core.inference.unet import build_unet, preset

    config = preset("tiny", features_base=4, features_max=8)
    path = save_checkpoint(tmp_path / "m.pt", build_unet(config), config, Normalization(), (16, 16, 16))
    before = torch.load(path, weights_only=True)
    assert checkpoint_choice(path) is None and checkpoint_choice(tmp_path) is None  # a folder: nnU-Net
    choice = PostprocessChoice(PostprocessConfig(t_low=0.65), 0.9, 0.85, ("v",))
    update_checkpoint_metadata(path, {METADATA_KEY: choice.to_metadata()})
    assert checkpoint_choice(path) == choice
    after = torch.load(path, weights_only=True)
    assert after["metadata"]["saved_at"] == before["metadata"]["saved_at"]
    for key, value in before["state_dict"].items():
        assert torch.equal(after["state_dict"][key], value)
    with pytest.raises(ValueError, match="not plain data"):
        update_checkpoint_metadata(path, {"bad": object()})
    assert checkpoint_choice(path) == choice  # the failed update left the file as it was
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match=r"junk\.pt"):
        update_checkpoint_metadata(junk, {METADATA_KEY: choice.to_metadata()})
    assert junk.read_bytes() == b"not a checkpoint"
