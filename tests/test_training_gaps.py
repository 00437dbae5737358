"""Gap voxels between separate surface components: marking, their loss weight, a run that uses them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from napari_vesuvius.core.labels import IGNORE, SURFACE  # noqa: E402
from napari_vesuvius.core.progress import run_job  # noqa: E402
from napari_vesuvius.core.synthetic import make_fragment  # noqa: E402
from napari_vesuvius.core.training._trainer import Trainer  # noqa: E402
from napari_vesuvius.core.training.config import TrainConfig, TrainConfigError  # noqa: E402
from napari_vesuvius.core.training.data import collect_sources  # noqa: E402
from napari_vesuvius.core.training.loss import GAP, SegmentationLoss, masked_dice_ce  # noqa: E402
from napari_vesuvius.core.training.monitor import read_metrics  # noqa: E402
from napari_vesuvius.core.training.runner import train  # noqa: E402
from napari_vesuvius.core.training.sampler import mark_gaps  # noqa: E402
from napari_vesuvius.core.volume.io import write_volume  # noqa: E402


def _two_slabs(gap: int) -> np.ndarray:
    label = np.zeros((20, 12, 12), np.uint8)
    label[2:6] = SURFACE
    label[6 + gap : 10 + gap] = SURFACE
    return label


def test_narrow_gaps_between_two_components_are_marked_and_nothing_else() -> None:
    marked = mark_gaps(_two_slabs(2))
    assert np.all(marked[6:8] == GAP)  # the whole 2-voxel gap
    assert np.array_equal(marked == SURFACE, _two_slabs(2) == SURFACE)
    assert np.count_nonzero(marked == GAP) == 2 * 12 * 12
    three = mark_gaps(_two_slabs(3))
    assert [bool(np.all(three[z] == GAP)) for z in (6, 7, 8)] == [False, True, False]
    assert not np.any(mark_gaps(_two_slabs(4)) == GAP)  # wider than 2·radius − 1
    one_sheet = np.zeros((20, 12, 12), np.uint8)
    one_sheet[2:6] = SURFACE
    one_sheet[6:8, :6] = IGNORE
    assert np.array_equal(mark_gaps(one_sheet), one_sheet)  # one component: no gap; ignore stays
    with_ignore = _two_slabs(2)
    with_ignore[6:8, :6] = IGNORE
    marked = mark_gaps(with_ignore)
    assert np.all(marked[6:8, :6] == IGNORE) and np.all(marked[6:8, 6:] == GAP)


def test_gap_voxels_are_background_with_a_heavier_cross_entropy() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 3, (2, 8, 8, 8), generator=generator)
    labels[0, 0, 0, :2] = torch.tensor([0, 1])
    gaps = labels.clone()
    gaps[(labels == 0) & (torch.rand(labels.shape, generator=generator) < 0.3)] = GAP
    logits = torch.randn(2, 2, 8, 8, 8, generator=generator)
    plain = masked_dice_ce(logits, labels)
    for a, b in zip(masked_dice_ce(logits, gaps), plain, strict=True):  # weight 1: just background
        assert torch.allclose(a, b, atol=1e-6)
    _, ce, dice = masked_dice_ce(logits, gaps, gap_weight=4.0)
    ce_map = torch.nn.functional.cross_entropy(logits, labels.clamp(max=1) * (labels == 1), reduction="none")
    weights = (gaps != IGNORE).float() + 3.0 * (gaps == GAP).float()
    assert torch.allclose(ce, (ce_map * weights).sum() / weights.sum(), atol=1e-6)
    assert torch.allclose(dice, plain[2], atol=1e-6)  # the Dice term does not change
    deep, _ = SegmentationLoss(gap_weight=4.0)([logits, logits[:, :, ::2, ::2, ::2]], gaps)
    assert torch.isfinite(deep)


def test_a_run_with_gap_weight_trains_and_scores_on_plain_labels(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    (root / "train_images").mkdir(parents=True)
    (root / "train_labels").mkdir()
    fragment = make_fragment((32, 32, 32), seed=3)
    write_volume(root / "train_images" / "a.tif", fragment.image)
    write_volume(root / "train_labels" / "a.tif", fragment.labels)
    config = TrainConfig(
        epochs=1, iterations_per_epoch=2, patch_size=(16, 16, 16), batch_size=1, data=(str(root),),
        model_preset="tiny", val_patches=1, torch_threads=1, gap_weight=5.0, score_every=1,
    )  # fmt: skip
    with pytest.raises(TrainConfigError, match="gap_weight"):
        replace(config, gap_weight=-1.0)
    trainer = Trainer(config.resolved(), tmp_path / "t", collect_sources([str(root)], []), [], None)
    try:  # no held-out volume: validation uses its own copy of the training volume, without GAP
        assert np.array_equal(trainer.val_volumes[0].label, fragment.labels)
        train_label = trainer.train_volumes[0].label
        assert np.array_equal(train_label, mark_gaps(fragment.labels)) and np.any(train_label == GAP)
    finally:
        trainer.close()
    result = run_job(train(config, tmp_path / "run"))
    assert result.iterations_done == 2
    end = next(r for r in read_metrics(tmp_path / "run") if r["event"] == "epoch_end")
    assert 0.0 <= end["score"] <= 1.0
