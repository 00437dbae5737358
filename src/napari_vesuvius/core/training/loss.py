"""Dice + cross-entropy with the ignore label masked out of both terms, and deep supervision.

Voxels labelled *ignore* (2) contribute nothing: they are removed from the cross-entropy average and
multiplied out of every Dice sum, so predictions there do not change the loss and get zero gradient.
The Dice term is nnU-Net's soft Dice without background, over the whole batch (``batch_dice``), with
smoothing 1e-5; the loss is ``CE + (1 − Dice)`` (nnU-Net logs ``CE − Dice``: same gradients).
Deep supervision weights are nnU-Net's: ``1/2**i`` per output (full resolution first), the lowest
resolution set to 0, normalised to sum 1.

Training labels may also hold :data:`GAP` (3): background voxels in a narrow gap between two separate
surface components (marked by :func:`.sampler.mark_gaps`). They are background for both terms, and
their cross-entropy is weighted by ``gap_weight`` (U-Net's separation weight map, Ronneberger et al.
2015): sheets closer than a few voxels are what merges instances and costs VOI and TopoScore.

Imports torch at module level: only the training code imports this module.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from ..labels import IGNORE

#: Training-only label value: background in a narrow gap between two surface components.
GAP = 3


def masked_dice_ce(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_label: int = IGNORE,
    smooth: float = 1e-5,
    gap_weight: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(loss, ce, dice)`` for logits ``(B, C, Z, Y, X)`` and integer labels ``(B, Z, Y, X)``.

    :data:`GAP` voxels count as background; their cross-entropy weighs ``gap_weight`` (the CE is the
    weighted mean over the labelled voxels).
    """
    logits = logits.float()
    target = target.long()
    mask = target != ignore_label
    gap = target == GAP
    safe_target = torch.where(mask & ~gap, target, torch.zeros_like(target))
    maskf = mask.unsqueeze(1).to(logits.dtype)
    ce_map = F.cross_entropy(logits, safe_target, reduction="none")
    weights = mask.to(logits.dtype)
    if gap_weight != 1.0:
        weights = weights + (float(gap_weight) - 1.0) * gap.to(logits.dtype)
    ce = (ce_map * weights).sum() / weights.sum().clamp_min(1)
    probs = torch.softmax(logits, dim=1)[:, 1:] * maskf
    onehot = F.one_hot(safe_target, logits.shape[1]).movedim(-1, 1)[:, 1:].to(logits.dtype) * maskf
    axes = [0, *range(2, logits.ndim)]
    intersection = (probs * onehot).sum(axes)
    denominator = (probs.sum(axes) + onehot.sum(axes) + smooth).clamp_min(1e-8)
    dice = ((2 * intersection + smooth) / denominator).mean()
    return ce + (1 - dice), ce, dice


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net's weights: halving per level, lowest resolution 0 (when there are several), normalised."""
    weights = [1 / 2**i for i in range(n_outputs)]
    if n_outputs > 1:
        weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_labels(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour label map of ``target`` ``(B, Z, Y, X)`` at spatial ``shape``."""
    if tuple(target.shape[1:]) == tuple(shape):
        return target
    resized = F.interpolate(target[:, None].float(), size=tuple(int(s) for s in shape), mode="nearest")
    return resized[:, 0].to(target.dtype)


class SegmentationLoss:
    """Masked Dice + CE over one output or a deep-supervision list (full resolution first)."""

    def __init__(self, ignore_label: int = IGNORE, gap_weight: float = 1.0) -> None:
        self.ignore_label = ignore_label
        self.gap_weight = float(gap_weight)

    def __call__(
        self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(loss, parts)`` where ``parts`` has the full-resolution ``ce`` and ``dice`` as floats."""
        if isinstance(outputs, torch.Tensor):
            outputs = [outputs]
        weights = deep_supervision_weights(len(outputs))
        total = outputs[0].new_zeros((), dtype=torch.float32)
        parts: dict[str, float] = {}
        for index, (output, weight) in enumerate(zip(outputs, weights, strict=True)):
            if weight == 0:
                continue
            level_target = downsample_labels(target, output.shape[2:])
            loss, ce, dice = masked_dice_ce(
                output, level_target, self.ignore_label, gap_weight=self.gap_weight
            )
            total = total + weight * loss
            if index == 0:
                parts = {"ce": float(ce.detach()), "dice": float(dice.detach())}
        return total, parts


def confusion_counts(
    logits: torch.Tensor, target: torch.Tensor, ignore_label: int = IGNORE
) -> tuple[int, int, int]:
    """``(tp, fp, fn)`` of the argmax surface prediction against the labels, ignore voxels excluded."""
    prediction = logits.argmax(dim=1) == 1
    mask = target != ignore_label
    truth = target == 1
    tp = int((prediction & truth & mask).sum())
    fp = int((prediction & ~truth & mask).sum())
    fn = int((~prediction & truth & mask).sum())
    return tp, fp, fn
