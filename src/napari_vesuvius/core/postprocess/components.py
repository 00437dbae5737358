"""Connected components (26-connectivity, cc3d): dust removal, keep-k, hole and cavity filling.

Foreground components are 26-connected, as in the leaderboard's VOI term. Holes and cavities are
components of the background with the dual connectivity (4 in a 2D slice, 6 in 3D) that do not
reach the volume faces, like ``scipy.ndimage.binary_fill_holes``.

Per-voxel lookups are done only on foreground voxels (``labels[mask]``), which are a few percent
of a surface prediction; a full-volume gather over 32 M uint32 labels costs ~0.1 s.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable, Iterator

import cc3d
import numpy as np

from ..boxes import bounding_box

_THREAD = threading.local()
#: voxels cc3d labels per call inside :func:`labelling_without_gil` (~5 ms of GIL held per slab)
SLAB_VOXELS = 2_000_000
#: offsets within the next plane (z + 1) of a voxel's neighbours, per connectivity: (dy, dx) in 3D,
#: (dx,) in 2D (2D 8-connectivity is absent: cc3d does not number its components in raster order)
_PLANE_OFFSETS = {
    26: [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)],
    18: [(0, 0), (-1, 0), (1, 0), (0, -1), (0, 1)],
    6: [(0, 0)],
    4: [(0,)],
}


@contextlib.contextmanager
def labelling_without_gil() -> Iterator[None]:
    """In this thread, label components slab by slab so Python's GIL is released between slabs.

    cc3d holds the GIL for a whole labelling (~0.1–0.2 s on a 320³ volume), which freezes a GUI
    thread while a worker labels. Inside this context the volume is labelled in z slabs of about
    :data:`SLAB_VOXELS` voxels, whose labels are then joined across slab faces (see
    :func:`_label_in_slabs`): the same labels as one cc3d call (raster order of each component's
    first voxel), so masks, sizes and keep-k ties are identical. Used by the Tune dock's workers.
    """
    previous = getattr(_THREAD, "without_gil", False)
    _THREAD.without_gil = True
    try:
        yield
    finally:
        _THREAD.without_gil = previous


def _cc3d(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    labels, count = cc3d.connected_components(
        mask, connectivity=connectivity, return_N=True, binary_image=True
    )
    return labels, int(count)


def _label_in_slabs(mask: np.ndarray, connectivity: int) -> tuple[np.ndarray, int]:
    """cc3d's labelling of a 3D (or 2D) mask, computed slab by slab (see :func:`labelling_without_gil`).

    Each slab along the first axis is labelled on its own (provisional labels, numbered on from the
    previous slabs, so they too follow raster order); labels touching across a slab face under
    ``connectivity`` are joined with a sparse-graph components pass; each component takes the rank
    of its smallest provisional label, which is the raster order of its first voxel, as cc3d's.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    depth = mask.shape[0]
    plane = max(1, int(np.prod(mask.shape[1:])))
    slab = max(1, SLAB_VOXELS // plane)
    if depth <= slab:
        return _cc3d(mask, connectivity)
    provisional = np.zeros(mask.shape, np.uint32)
    total = 0
    for start in range(0, depth, slab):
        inside = mask[start : start + slab]
        labels, count = _cc3d(inside, connectivity)
        if count:
            part = provisional[start : start + slab]
            np.copyto(part, labels, casting="unsafe")
            if total:
                part[inside] += np.uint32(total)
            total += count
    if total == 0:
        return provisional, 0
    heads, tails = [], []
    sizes = mask.shape[1:]
    for start in range(slab, depth, slab):
        below, above = provisional[start - 1], provisional[start]
        for offset in _PLANE_OFFSETS[connectivity]:
            a = below[tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset, sizes, strict=True))]
            b = above[tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset, sizes, strict=True))]
            touching = (a > 0) & (b > 0)
            heads.append(a[touching])
            tails.append(b[touching])
    head = np.concatenate(heads).astype(np.int64)
    tail = np.concatenate(tails).astype(np.int64)
    graph = coo_matrix((np.ones(head.size, np.int8), (head, tail)), shape=(total + 1, total + 1))
    _, component = connected_components(graph, directed=False)
    component = component[1:]  # of provisional labels 1..total, in increasing order
    unique, first = np.unique(component, return_index=True)
    rank = np.zeros(unique.size, np.uint32)
    rank[np.argsort(first, kind="stable")] = np.arange(1, unique.size + 1, dtype=np.uint32)
    table = np.zeros(total + 1, np.uint32)
    table[1:] = rank[np.searchsorted(unique, component)]
    if np.array_equal(table, np.arange(total + 1)):
        return provisional, int(unique.size)
    provisional[mask] = table[provisional[mask]]  # foreground only: a full-volume gather costs seconds
    return provisional, int(unique.size)


def _label(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, int]:
    mask = np.asarray(mask, dtype=bool)
    if getattr(_THREAD, "without_gil", False) and connectivity in _PLANE_OFFSETS:
        return _label_in_slabs(mask, connectivity)
    return _cc3d(mask, connectivity)


def _select(mask: np.ndarray, labels: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """``mask`` restricted to voxels whose label is marked in the boolean table ``keep``."""
    out = np.zeros(mask.shape, bool)
    out[mask] = keep[labels[mask]]
    return out


def label_components(mask: np.ndarray, connectivity: int = 26) -> tuple[np.ndarray, np.ndarray]:
    """Label components sorted by size: ``(labels uint32, sizes)``, label 1 the largest.

    ``sizes[i]`` is the voxel count of label ``i + 1``; equal sizes keep their raster order.
    """
    mask = np.asarray(mask, dtype=bool)
    labels, count = _label(mask, connectivity)
    if count == 0:
        return labels.astype(np.uint32, copy=False), np.zeros(0, np.int64)
    raw = labels[mask]
    sizes = np.bincount(raw, minlength=count + 1)[1:]
    order = np.argsort(-sizes, kind="stable")
    rank = np.zeros(count + 1, np.uint32)
    rank[order + 1] = np.arange(1, count + 1, dtype=np.uint32)
    out = np.zeros(mask.shape, np.uint32)
    out[mask] = rank[raw]
    return out, sizes[order].astype(np.int64)


def _table(labels: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    ids = np.asarray(list(ids), dtype=np.int64)
    top = int(labels.max()) if labels.size else 0
    table = np.zeros(top + 1, bool)
    ids = ids[(ids > 0) & (ids <= top)]
    table[ids] = True
    return table


def remove_components(mask: np.ndarray, labels: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """``mask`` without the components whose label is in ``ids`` (labels from :func:`label_components`)."""
    mask = np.asarray(mask, dtype=bool)
    return _select(mask, labels, ~_table(labels, ids))


def keep_components(mask: np.ndarray, labels: np.ndarray, ids: Iterable[int]) -> np.ndarray:
    """Only the components of ``mask`` whose label is in ``ids``."""
    mask = np.asarray(mask, dtype=bool)
    return _select(mask, labels, _table(labels, ids))


class ComponentFilter:
    """One 26-connected labelling of a mask, filtered by size and keep-k as often as needed.

    :func:`filter_components` (the pipeline's components step) is one use; the parameter sweep keeps
    an instance to score many ``dust_size`` / ``keep_largest`` values for the price of one labelling,
    with masks equal to the pipeline's by construction. The mask is labelled on the first filter that
    can drop something; afterwards each filter costs a table lookup over the foreground voxels.
    """

    def __init__(self, mask: np.ndarray) -> None:
        self.mask = np.asarray(mask, dtype=bool)
        self._raw: np.ndarray | None = None  # label of each foreground voxel, in ``mask`` order
        self._sizes: np.ndarray | None = None  # voxel count per label (index 0 unused)

    def _labelled(self) -> tuple[np.ndarray, np.ndarray]:
        if self._raw is None or self._sizes is None:
            labels, count = _label(self.mask)
            self._raw = labels[self.mask]
            self._sizes = np.bincount(self._raw, minlength=count + 1)
        return self._raw, self._sizes

    def keep_table(self, min_size: int = 0, keep_largest: int = 0) -> np.ndarray | None:
        """Boolean table over labels of the components kept (index 0 False); None: keep everything.

        Components under ``min_size`` voxels go, then the ``keep_largest`` largest remaining stay
        (all when 0); among equal sizes the one met first in raster (z, y, x) order wins a tie.
        """
        if min_size <= 1 and keep_largest <= 0:
            return None
        _, sizes = self._labelled()
        keep = sizes >= max(min_size, 1)
        keep[0] = False
        if keep_largest > 0 and int(keep.sum()) > keep_largest:
            order = np.argsort(-np.where(keep, sizes, -1)[1:], kind="stable")
            keep[:] = False
            keep[order[:keep_largest] + 1] = True
        return None if keep[1:].all() else keep

    def filter(self, min_size: int = 0, keep_largest: int = 0) -> np.ndarray:
        """A new mask without components under ``min_size`` voxels, keeping the ``keep_largest`` largest."""
        keep = self.keep_table(min_size, keep_largest)
        if keep is None:
            return self.mask.copy()
        raw, _ = self._labelled()
        out = np.zeros(self.mask.shape, bool)
        out[self.mask] = keep[raw]
        return out


def filter_components(mask: np.ndarray, min_size: int = 0, keep_largest: int = 0) -> np.ndarray:
    """Drop 26-connected components under ``min_size`` voxels, then keep the ``keep_largest`` largest.

    One labelling serves both steps (:class:`ComponentFilter`). Among components of equal size the
    one met first in raster (z, y, x) order wins a keep-k tie.
    """
    return ComponentFilter(mask).filter(min_size, keep_largest)


def remove_dust(mask: np.ndarray, min_size: int) -> np.ndarray:
    """Remove 26-connected components with fewer than ``min_size`` voxels."""
    return filter_components(mask, min_size=min_size)


def keep_largest_components(mask: np.ndarray, k: int) -> np.ndarray:
    """Keep the ``k`` largest 26-connected components (all when ``k`` is 0)."""
    return filter_components(mask, keep_largest=k)


def _enclosed(background: np.ndarray, connectivity: int, max_size: int) -> np.ndarray | None:
    """Background voxels of a padded array not connected to its outer shell (index 0); None if none.

    The caller pads with a one-voxel background shell, so everything reaching a face belongs to the
    shell's component and a single comparison finds the enclosed voxels.
    """
    labels, count = _label(background, connectivity)
    if count <= 1:  # only the outer component: nothing enclosed (the common case for sheets)
        return None
    outside = labels.flat[0]
    # cc3d numbers components in raster order, so the shell (holding index 0) is label 1 and every
    # other nonzero label is enclosed; keep the general test in case that ever changes.
    enclosed = labels > 1 if outside == 1 else background & (labels != outside)
    if max_size > 0 and enclosed.any():
        raw = labels[enclosed]
        sizes = np.bincount(raw)
        small = sizes <= max_size
        enclosed[enclosed] = small[raw]
    return enclosed


def fill_holes_2d(mask: np.ndarray, axis: int = 0, max_size: int = 0) -> np.ndarray:
    """Fill holes slice by slice along ``axis``: background 4-components not touching the slice edge.

    ``max_size > 0`` fills only holes of at most that many voxels. All slices are labelled in one
    2D cc3d call: slices (each padded with a background ring) are stacked into one tall image, whose
    rings then form one component touching every slice edge.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"fill_holes_2d needs a 3D mask, got shape {mask.shape}")
    moved = np.moveaxis(mask, axis, 0)
    n, h, w = moved.shape
    background = np.ones((n, h + 2, w + 2), bool)
    np.logical_not(moved, out=background[:, 1:-1, 1:-1])
    holes = _enclosed(background.reshape(n * (h + 2), w + 2), 4, max_size)
    if holes is None:
        return mask.copy()
    filled = moved | holes.reshape(n, h + 2, w + 2)[:, 1:-1, 1:-1]
    return np.ascontiguousarray(np.moveaxis(filled, 0, axis))


def fill_cavities_3d(mask: np.ndarray, max_size: int = 0) -> np.ndarray:
    """Fill 3D cavities: background 6-components that touch no face of the volume.

    ``max_size > 0`` fills only cavities of at most that many voxels. Cavities lie inside the
    foreground's bounding box, so only that box (plus a background shell) is labelled.
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 3:
        raise ValueError(f"fill_cavities_3d needs a 3D mask, got shape {mask.shape}")
    box = bounding_box(mask)
    out = mask.copy()
    if box is None:
        return out
    crop = mask[box]
    background = np.ones(tuple(n + 2 for n in crop.shape), bool)
    np.logical_not(crop, out=background[1:-1, 1:-1, 1:-1])
    cavities = _enclosed(background, 6, max_size)
    if cavities is not None:
        out[box] |= cavities[1:-1, 1:-1, 1:-1]
    return out
