"""Variation of information between the connected components of two masks, as the leaderboard uses it.

Each mask is split into its 26-connected components (``cc3d``); only voxels in the union of both
foregrounds are compared, where a voxel outside one mask carries that mask's label 0 like any other label.
The conditional entropies (in bits) come from a contingency table of (label component, prediction
component) pairs, built with one ``bincount``/``unique`` instead of a sparse matrix.

Naming follows the official toolkit, which reports ``skimage.metrics.variation_of_information(gt, pr)``
as ``(voi_split, voi_merge)``: ``voi_split`` = H(PR | GT) (the prediction splits label components) and
``voi_merge`` = H(GT | PR) (the prediction merges them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Weight of the VOI total in the leaderboard's ``VOI_score = 1 / (1 + alpha · VOI)``.
VOI_ALPHA = 0.3


@dataclass(frozen=True)
class VoiResult:
    """VOI terms of one volume: split + merge = total, and the leaderboard's score in (0, 1]."""

    split: float
    merge: float
    score: float
    n_voxels: int
    n_label_components: int
    n_pred_components: int

    @property
    def total(self) -> float:
        return self.split + self.merge

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def _components(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    import cc3d

    labels, count = cc3d.connected_components(mask, connectivity=connectivity, return_N=True)
    return labels, int(count)


def _pair_counts(a: np.ndarray, na: int, b: np.ndarray, nb: int) -> np.ndarray:
    """Non-zero counts of the contingency table of label pairs as a 2 × K array of row/col ids + counts."""
    width = np.int64(nb + 1)
    keys = a.astype(np.int64) * width + b
    cells = (na + 1) * (nb + 1)
    if cells <= 4 * keys.size + 1024:
        counts = np.bincount(keys, minlength=cells)
        present = np.flatnonzero(counts)
        return np.stack([present // width, present % width, counts[present]])
    present, counts = np.unique(keys, return_counts=True)
    return np.stack([present // width, present % width, counts])


def _conditional_entropy(joint: np.ndarray, given: np.ndarray, given_totals: np.ndarray, n: int) -> float:
    """H(X | Y) in bits from joint counts n_xy, the Y index of each cell, and the Y totals."""
    p = joint / n
    return float(np.sum(p * np.log2(given_totals[given] / joint)))


def voi(
    pred: np.ndarray, label: np.ndarray, *, connectivity: int = 26, alpha: float = VOI_ALPHA
) -> VoiResult:
    """VOI of two boolean 3D masks (after ignore handling); both empty → split = merge = 0, score 1."""
    pred = np.asarray(pred, dtype=bool)
    label = np.asarray(label, dtype=bool)
    if pred.ndim != 3 or pred.shape != label.shape:
        raise ValueError(f"voi needs two 3D masks of one shape, got {pred.shape} and {label.shape}")
    if connectivity not in (6, 18, 26):
        raise ValueError(f"connectivity must be 6, 18 or 26, got {connectivity!r}")
    union = pred | label
    if not union.any():
        return VoiResult(0.0, 0.0, 1.0, 0, 0, 0)
    box = []
    for axis in range(3):
        hits = np.flatnonzero(union.any(axis=tuple(a for a in range(3) if a != axis)))
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    crop = tuple(box)
    union = union[crop]
    label_cc, n_label = _components(label[crop], connectivity)
    pred_cc, n_pred = _components(pred[crop], connectivity)
    a = label_cc[union]
    b = pred_cc[union]
    del label_cc, pred_cc
    n = int(a.size)
    rows, cols, joint = _pair_counts(a, n_label, b, n_pred)
    label_totals = np.bincount(rows, weights=joint, minlength=n_label + 1)
    pred_totals = np.bincount(cols, weights=joint, minlength=n_pred + 1)
    joint = joint.astype(np.float64)
    split = _conditional_entropy(joint, rows, label_totals, n)  # H(PR | GT)
    merge = _conditional_entropy(joint, cols, pred_totals, n)  # H(GT | PR)
    split, merge = max(split, 0.0), max(merge, 0.0)
    score = 1.0 / (1.0 + alpha * (split + merge))
    return VoiResult(split, merge, score, n, n_label, n_pred)
