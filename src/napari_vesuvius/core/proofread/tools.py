"""Component tools for proofreading 0/1/2 labels: delete/keep, split by a local threshold, diagonal bridges.

All tools change only surface voxels (1 → 0) and never touch ignore (2). Components are 26-connected,
as in the leaderboard's VOI term (:func:`~napari_vesuvius.core.postprocess.label_components`).

* :func:`delete_components` / :func:`keep_only_components` — the Tune widget's delete/keep, on labels.
* :func:`split_component` — two sheets merged into one component: raise the threshold *inside that
  component only* until it falls apart into at least two parts of ``min_part`` voxels, grow the parts
  back over the component by a watershed on the probability (so the sheets keep their thickness and
  the cut runs through the weakest voxels), then remove a one-voxel cut where two parts meet.
* :func:`remove_diagonal_bridges` — sheets that touch only along edges or corners (26- but not
  6-connected): remove the voxels of such diagonal contacts, and small 6-connected debris that links
  two sheets, until the sheets are separate 26-connected components.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import product

import cc3d
import numpy as np

from ..boxes import bounding_box
from ..labels import BACKGROUND, SURFACE
from ..postprocess import keep_components, label_components, remove_components

#: half of the 26-neighbourhood without the 3 face offsets: the 10 edge/corner directions
DIAGONAL_OFFSETS = tuple(o for o in product((-1, 0, 1), repeat=3) if o > (0, 0, 0) and sum(map(abs, o)) > 1)
#: half of the full 26-neighbourhood (13 directions)
HALF_OFFSETS = tuple(o for o in product((-1, 0, 1), repeat=3) if o > (0, 0, 0))


def _pairs(shape: tuple[int, ...], offset: tuple[int, ...]) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Slices ``(a, b)`` so that ``x[a]`` and ``x[b]`` are voxel pairs ``offset`` apart."""
    a = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, shape, strict=True))
    b = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, shape, strict=True))
    return a, b


def _neighbour_pairs(
    labels: np.ndarray, offsets: Iterable[tuple[int, ...]]
) -> Iterator[tuple[tuple[slice, ...], tuple[slice, ...], np.ndarray, np.ndarray]]:
    for offset in offsets:
        a, b = _pairs(labels.shape, offset)
        yield a, b, labels[a], labels[b]


# --------------------------------------------------------------------------------------- delete / keep
def delete_components(labels: np.ndarray, components: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """``labels`` with the surface voxels of the given components (from ``label_components``) set to 0."""
    surface = labels == SURFACE
    out = labels.copy()
    out[surface & ~remove_components(surface, components, ids)] = BACKGROUND
    return out


def keep_only_components(labels: np.ndarray, components: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """``labels`` with every surface voxel outside the given components set to 0 (ignore kept)."""
    surface = labels == SURFACE
    out = labels.copy()
    out[surface & ~keep_components(surface, components, ids)] = BACKGROUND
    return out


# --------------------------------------------------------------------------------------------- split
@dataclass(frozen=True)
class SplitResult:
    labels: np.ndarray
    threshold: float
    parts: int
    removed: int


def _as_unit(probability: np.ndarray) -> np.ndarray:
    prob = np.asarray(probability)
    return prob.astype(np.float32) / 255.0 if prob.dtype == np.uint8 else prob.astype(np.float32)


def _parts(mask: np.ndarray, min_part: int) -> tuple[np.ndarray, int]:
    """26-components of ``mask`` with at least ``min_part`` voxels, relabelled 1..k (largest first)."""
    parts, sizes = label_components(mask)
    keep = int(np.count_nonzero(sizes >= max(min_part, 1)))
    if keep < len(sizes):
        parts[parts > keep] = 0
    return parts, keep


def split_component(
    labels: np.ndarray,
    components: np.ndarray,
    component: int,
    probability: np.ndarray,
    *,
    threshold: float | None = None,
    min_part: int = 50,
    candidates: int = 64,
) -> SplitResult:
    """Split one 26-connected component by a higher threshold inside it (see the module docstring).

    ``threshold`` None searches ``candidates`` quantiles of the component's probabilities, lowest
    first, for the first one that leaves two or more parts of ``min_part`` voxels. Raises
    ``ValueError`` when the component does not exist or no threshold splits it.
    """
    from skimage.segmentation import watershed

    if labels.shape != components.shape or labels.shape != probability.shape:
        raise ValueError("labels, components and probability must have the same shape")
    member = components == component
    box = bounding_box(member)
    if box is None or component <= 0:
        raise ValueError(f"component {component} does not exist")
    inside = member[box] & (labels[box] == SURFACE)
    prob = _as_unit(probability[box])
    values = prob[inside]
    if threshold is None:
        levels = np.unique(np.quantile(values, np.linspace(0.0, 1.0, candidates + 2)[1:-1]))
        levels = levels[levels > values.min()]
    else:
        levels = np.array([float(threshold)])
    parts, count, used = None, 0, float("nan")
    for level in levels:
        parts, count = _parts(inside & (prob >= level), min_part)
        used = float(level)
        if count >= 2:
            break
    if parts is None or count < 2:
        at = f"at threshold {used:.3f}" if threshold is not None else "at any threshold"
        raise ValueError(
            f"component {component} does not split {at} into two parts of at least {min_part} voxels"
        )
    # grow the parts back over the whole component, along falling probability (cut at the weakest voxels)
    owner = watershed(-prob, markers=parts.astype(np.int32), mask=inside, connectivity=3)
    cut = np.zeros(inside.shape, bool)
    for a, b, first, second in _neighbour_pairs(owner, HALF_OFFSETS):
        touching = (first > 0) & (second > 0) & (first != second)
        cut[a] |= touching & (first > second)
        cut[b] |= touching & (second > first)
    out = labels.copy()
    region = out[box]
    region[cut] = BACKGROUND
    return SplitResult(out, used, count, int(cut.sum()))


# ---------------------------------------------------------------------------------- diagonal bridges
@dataclass(frozen=True)
class BridgeResult:
    labels: np.ndarray
    removed: int
    rounds: int
    components_before: int
    components_after: int


def _diagonal_cut(surface: np.ndarray, min_sheet: int) -> np.ndarray:
    """Voxels to remove in one round: debris linking two sheets, and the smaller side of sheet contacts."""
    l6, count = cc3d.connected_components(surface, connectivity=6, return_N=True, binary_image=True)
    cut = np.zeros(surface.shape, bool)
    if count < 2:
        return cut
    sizes = np.bincount(l6[surface], minlength=count + 1)
    sheet = sizes >= max(min_sheet, 1)
    sheet[0] = False
    # debris: 26-connected groups of small 6-components; a group touching two sheets is a bridge
    debris = surface & ~sheet[l6]
    clusters, n_clusters = cc3d.connected_components(
        debris, connectivity=26, return_N=True, binary_image=True
    )
    if n_clusters:
        pairs = []
        for a, b, first, second in _neighbour_pairs(l6, DIAGONAL_OFFSETS):
            ca, cb = clusters[a], clusters[b]
            hit = (ca > 0) & sheet[second]
            pairs.append(np.stack([ca[hit], second[hit]], axis=1))
            hit = (cb > 0) & sheet[first]
            pairs.append(np.stack([cb[hit], first[hit]], axis=1))
        touching = np.unique(np.concatenate(pairs).astype(np.int64), axis=0)
        if len(touching):
            sheets_touched = np.bincount(touching[:, 0], minlength=n_clusters + 1)
            cluster_sizes = np.bincount(clusters[debris], minlength=n_clusters + 1)
            bridge = (sheets_touched >= 2) & (cluster_sizes < max(min_sheet, 1))
            bridge[0] = False
            cut |= bridge[clusters]
    # direct edge/corner contacts between two sheets: remove the voxel of the smaller sheet
    for a, b, first, second in _neighbour_pairs(l6, DIAGONAL_OFFSETS):
        contact = sheet[first] & sheet[second] & (first != second)
        if not contact.any():
            continue
        size_a, size_b = sizes[first], sizes[second]
        a_smaller = (size_a < size_b) | ((size_a == size_b) & (first > second))
        cut[a] |= contact & a_smaller
        cut[b] |= contact & ~a_smaller
    return cut


def remove_diagonal_bridges(labels: np.ndarray, *, min_sheet: int = 100, max_rounds: int = 8) -> BridgeResult:
    """Remove surface voxels that only join two sheets diagonally (see the module docstring).

    A sheet is a 6-connected component of at least ``min_sheet`` voxels. Repeats (at most
    ``max_rounds`` times) because a removal can expose new diagonal contacts.
    """
    surface_all = labels == SURFACE
    box = bounding_box(surface_all)
    out = labels.copy()
    before = int(cc3d.connected_components(surface_all, connectivity=26, return_N=True)[1])
    if box is None:
        return BridgeResult(out, 0, 0, before, before)
    surface = surface_all[box].copy()
    removed = np.zeros(surface.shape, bool)
    rounds = 0
    while rounds < max_rounds:
        cut = _diagonal_cut(surface, min_sheet)
        if not cut.any():
            break
        rounds += 1
        surface &= ~cut
        removed |= cut
    region = out[box]
    region[removed] = BACKGROUND
    after = int(cc3d.connected_components(out == SURFACE, connectivity=26, return_N=True)[1])
    return BridgeResult(out, int(removed.sum()), rounds, before, after)
