"""Validation during training: nnU-Net's pseudo-Dice on patches, and the leaderboard score.

*Pseudo-Dice*: true/false positives and false negatives of the argmax prediction on a fixed set of
validation patches (same seeds every epoch, no augmentation, ignore voxels excluded) are summed over
the set, then ``2·TP / (2·TP + FP + FN)``. It is cheap and tracks training well, but it is not the
leaderboard score, which :func:`score_volumes` computes on whole validation volumes (sliding-window
inference, the default post-processing and ``score_volume``) every ``score_every`` epochs.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from .loss import confusion_counts, masked_dice_ce
from .sampler import PatchSampler, TrainingVolume


def validation_batches(
    sampler: PatchSampler, n_patches: int, batch_size: int, seed: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The fixed validation patches (seeded: identical every epoch), in batches."""
    rng = np.random.default_rng([int(seed), 2])
    patches = [sampler.sample(rng) for _ in range(int(n_patches))]
    batches = []
    for i in range(0, len(patches), batch_size):
        chunk = patches[i : i + batch_size]
        batches.append((np.stack([p[0] for p in chunk])[:, None], np.stack([p[1] for p in chunk])))
    return batches


@torch.no_grad()
def pseudo_dice(
    network: torch.nn.Module,
    batches: Sequence[tuple[np.ndarray, np.ndarray]],
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    memory_format: torch.memory_format = torch.contiguous_format,
) -> tuple[float, float]:
    """``(validation loss, pseudo-Dice)`` of ``network`` (in eval mode) on the validation batches."""
    tp = fp = fn = 0
    loss_sum, weight = 0.0, 0
    for images, labels in batches:
        x = torch.from_numpy(images).to(device).contiguous(memory_format=memory_format)
        y = torch.from_numpy(labels).to(device)
        with autocast():
            output = network(x)
        logits = (output[0] if isinstance(output, list | tuple) else output).float()
        loss, _, _ = masked_dice_ce(logits, y)
        loss_sum += float(loss) * len(images)
        weight += len(images)
        counts = confusion_counts(logits, y)
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
    dice = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) > 0 else float("nan")
    return loss_sum / max(weight, 1), dice


def find_default_postprocess() -> tuple[Callable[[np.ndarray, np.ndarray], np.ndarray] | None, str]:
    """The default post-processing as ``f(probability, ct) -> mask``, or ``(None, why)`` if unavailable."""
    try:
        from ..postprocess import PostprocessConfig, run_pipeline, scan_mask_from_ct
    except ImportError as error:
        return None, f"post-processing not importable ({error})"
    config = PostprocessConfig()

    def run(probability: np.ndarray, ct: np.ndarray) -> np.ndarray:
        return np.asarray(run_pipeline(probability, config, scan_mask=scan_mask_from_ct(ct)))

    return run, ""


def score_volumes(
    network: torch.nn.Module,
    patch_size: Sequence[int],
    normalization: Any,
    volumes: Sequence[TrainingVolume],
    device: str,
    batch_size: int = 2,
) -> tuple[dict[str, Any] | None, str]:
    """Mean leaderboard score (and its terms) over ``volumes``, or ``(None, why)`` when not possible."""
    try:
        from ..inference.engine import predict
        from ..inference.model_api import InferenceModel
        from ..metric import score_volume
    except ImportError as error:
        return None, f"scoring skipped: inference/metric not importable ({error})"
    postprocess, why = find_default_postprocess()
    if postprocess is None:
        return None, f"scoring skipped: {why}"
    patch = tuple(int(p) for p in patch_size)
    model = InferenceModel(networks=[network], patch_size=patch, normalization=normalization)
    per_volume: dict[str, dict[str, float]] = {}
    for volume in volumes:
        result = predict(volume.image, model, device=device, batch_size=batch_size, output_dtype="float32")
        mask = postprocess(np.asarray(result.probability), volume.image)
        score = score_volume(mask, volume.label).to_dict()
        per_volume[volume.source.id] = {k: float(v) for k, v in score.items() if isinstance(v, int | float)}
    keys = next(iter(per_volume.values())).keys() if per_volume else []
    mean = {key: float(np.mean([v[key] for v in per_volume.values()])) for key in keys}
    return {"mean": mean, "volumes": per_volume}, ""
