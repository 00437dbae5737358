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


def _pair_keys(a: np.ndarray, b: np.ndarray, nb: int) -> np.ndarray:
    """``a * (nb + 1) + b`` as one int64 array (consumes ``a``'s buffer when it already is int64)."""
    keys = a.astype(np.int64, copy=False)
    keys *= np.int64(nb + 1)
    keys += b
    return keys


def _pair_counts(keys: np.ndarray, na: int, nb: int) -> np.ndarray:
    """Non-zero counts of the contingency table of label pairs as a 3 × K array of row/col ids + counts.

    A dense ``bincount`` when the table is at most about as large as the keys (8 bytes per cell),
    else ``unique``; both list the present cells in increasing key order, so the results are equal.
    """
    width = np.int64(nb + 1)
    cells = (na + 1) * (nb + 1)
    if cells <= keys.size + 1024:
        counts = np.bincount(keys, minlength=cells)
        del keys
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
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(pred.any(axis=others) | label.any(axis=others))
        if hits.size == 0:
            return VoiResult(0.0, 0.0, 1.0, 0, 0, 0)
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    crop = tuple(box)
    union = pred[crop] | label[crop]
    label_cc, n_label = _components(label[crop], connectivity)
    a = label_cc[union]
    del label_cc
    pred_cc, n_pred = _components(pred[crop], connectivity)
    b = pred_cc[union]
    del pred_cc, union
    n = int(a.size)
    keys = _pair_keys(a, b, n_pred)
    del a, b
    rows, cols, joint = _pair_counts(keys, n_label, n_pred)
    del keys
    label_totals = np.bincount(rows, weights=joint, minlength=n_label + 1)
    pred_totals = np.bincount(cols, weights=joint, minlength=n_pred + 1)
    joint = joint.astype(np.float64)
    split = _conditional_entropy(joint, rows, label_totals, n)  # H(PR | GT)
    merge = _conditional_entropy(joint, cols, pred_totals, n)  # H(GT | PR)
    split, merge = max(split, 0.0), max(merge, 0.0)
    score = 1.0 / (1.0 + alpha * (split + merge))
    return VoiResult(split, merge, score, n, n_label, n_pred)
