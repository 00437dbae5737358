"""Loss: the ignore label contributes nothing (value and gradient), deep-supervision weights."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from napari_vesuvius.core.training.loss import (  # noqa: E402
    SegmentationLoss,
    confusion_counts,
    deep_supervision_weights,
    masked_dice_ce,
)


def _labels(generator: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, 3, (2, 8, 8, 8), generator=generator)
    labels[0, 0, 0, 0], labels[0, 0, 0, 1] = 0, 1  # both classes present
    return labels


def test_predictions_inside_ignore_do_not_change_the_loss() -> None:
    generator = torch.Generator().manual_seed(0)
    labels = _labels(generator)
    logits = torch.randn(2, 2, 8, 8, 8, generator=generator)
    changed = logits.clone()
    ignore = (labels == 2).unsqueeze(1).expand_as(logits)
    changed[ignore] = torch.randn(int(ignore.sum()), generator=generator) * 50
    for a, b in zip(masked_dice_ce(logits, labels), masked_dice_ce(changed, labels), strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_gradient_is_zero_on_ignore_voxels_and_not_elsewhere() -> None:
    generator = torch.Generator().manual_seed(1)
    labels = _labels(generator)
    logits = torch.randn(2, 2, 8, 8, 8, generator=generator, requires_grad=True)
    loss, _, _ = masked_dice_ce(logits, labels)
    loss.backward()
    ignore = (labels == 2).unsqueeze(1).expand_as(logits)
    assert torch.count_nonzero(logits.grad[ignore]) == 0
    assert torch.count_nonzero(logits.grad[~ignore]) > 0.9 * int((~ignore).sum())


def test_loss_is_small_for_a_perfect_prediction_and_large_for_the_opposite() -> None:
    labels = torch.zeros(1, 8, 8, 8, dtype=torch.long)
    labels[:, 2:4] = 1
    labels[:, 6:] = 2
    truth = torch.nn.functional.one_hot(labels.clamp(max=1), 2).movedim(-1, 1).float()
    good, _, dice_good = masked_dice_ce(truth * 20 - 10, labels)
    bad, _, dice_bad = masked_dice_ce(10 - truth * 20, labels)
    assert float(good) < 1e-3 and float(dice_good) > 0.999
    assert float(bad) > 5 and float(dice_bad) < 1e-3


def test_deep_supervision_weights_follow_nnunet() -> None:
    assert deep_supervision_weights(1) == [1.0]
    weights = deep_supervision_weights(4)
    assert weights[-1] == 0.0
    assert weights[0] == pytest.approx(4 / 7) and weights[1] == pytest.approx(2 / 7)
    assert sum(weights) == pytest.approx(1.0)


def test_deep_supervision_loss_uses_downsampled_labels() -> None:
    generator = torch.Generator().manual_seed(2)
    labels = _labels(generator)
    outputs = [torch.randn(2, 2, n, n, n, generator=generator) for n in (8, 4, 2)]
    total, parts = SegmentationLoss()(outputs, labels)
    full, ce, dice = masked_dice_ce(outputs[0], labels)
    half, _, _ = masked_dice_ce(outputs[1], labels[:, ::2, ::2, ::2])
    assert float(total) == pytest.approx(2 / 3 * float(full) + 1 / 3 * float(half), rel=1e-5)
    assert parts == pytest.approx({"ce": float(ce), "dice": float(dice)})


def test_confusion_counts_exclude_ignore() -> None:
    labels = torch.tensor([[[[0, 1, 1, 2]]]])
    logits = torch.tensor([[[[[0.0, 0.0, 1.0, 0.0]]]], [[[[1.0, 1.0, 0.0, 1.0]]]]]).reshape(1, 2, 1, 1, 4)
    assert confusion_counts(logits, labels) == (1, 1, 1)
