"""The synthetic scroll fragment: a CT-like uint8 volume of papyrus sheets and its challenge-style labels.

Label choice: label 1 marks the **whole body of each sheet** (3–8 voxels thick along the stacking
axis, mean ≈ 5.5–6), standing in for the real recto-surface layer (mean thickness ≈ 6.5). With the
default sheet spacing that gives surface ≈ 3–8 % of all voxels and ignore ≈ 50–60 %, like the
challenge volumes, and it keeps the task's hard cases: tears (holes that TopoScore sees), sheets
converging to 1–3 voxel gaps (which blur merges) and occasional true contacts (merged instances).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..labels import IGNORE, SURFACE
from ._options import FragmentOptions
from ._render import add_debris, ignore_mask, render_ct, scan_disc
from ._sheets import build_sheets


@dataclass(frozen=True)
class SyntheticFragment:
    """One synthetic volume, all arrays ``(Z, Y, X)``.

    ``image`` uint8 CT (0 exactly outside the scan cylinder); ``labels`` uint8 challenge labels
    (0 background, 1 surface, 2 ignore); ``surface`` uint8 {0,1} full ground truth without ignore
    (sheets inside the scan); ``instances`` sheet ids (0 none, k = k-th sheet along the stacking axis);
    ``scan_mask`` bool scanned cylinder; ``metadata`` JSON-serialisable facts (seed, n_sheets, ...).
    """

    image: np.ndarray
    labels: np.ndarray
    surface: np.ndarray
    instances: np.ndarray
    scan_mask: np.ndarray
    metadata: dict[str, Any]

    @property
    def seed(self) -> int:
        return int(self.metadata["seed"])

    @property
    def n_sheets(self) -> int:
        return int(self.metadata["n_sheets"])


def _check_shape(shape: tuple[int, ...]) -> tuple[int, int, int]:
    dims = tuple(int(n) for n in shape)
    if len(dims) != 3 or min(dims) < 8:
        raise ValueError(f"synthetic fragment shape must be 3 sizes of at least 8 voxels, got {tuple(shape)}")
    return dims  # type: ignore[return-value]


def make_fragment(
    shape: tuple[int, int, int] = (128, 128, 128), seed: int = 0, **options: Any
) -> SyntheticFragment:
    """Generate a deterministic synthetic scroll fragment (same ``shape`` + ``seed`` → same arrays).

    ``options`` are the fields of :class:`FragmentOptions` (e.g. ``stack_axis=1``,
    ``ignore_fraction=0.0``, ``merge_probability=0.0``).
    """
    dims = _check_shape(shape)
    opts = FragmentOptions.from_kwargs(**options)
    rng = np.random.default_rng(np.random.SeedSequence(int(seed)))
    # Sheets mostly wrap around the scroll axis (z), so their normals lie mostly in the y-x plane.
    stack_axis = int(rng.choice(3, p=[0.2, 0.4, 0.4])) if opts.stack_axis is None else opts.stack_axis
    canonical = (dims[stack_axis], *(dims[i] for i in range(3) if i != stack_axis))
    stack = build_sheets(rng, canonical, opts)
    instances = np.ascontiguousarray(np.moveaxis(stack.instances, 0, stack_axis))
    density = np.ascontiguousarray(np.moveaxis(stack.density, 0, stack_axis))
    del stack.instances, stack.density

    disc, scan = scan_disc(rng, dims, opts)
    instances[:, ~disc] = 0
    n_debris = add_debris(rng, density, instances > 0, opts)
    image, imaging = render_ct(rng, density, disc, scan, opts)
    del density
    instances, kept = _renumber(instances)
    surface = (instances > 0).astype(np.uint8)
    ignore, annotation = ignore_mask(rng, dims, disc, opts)
    labels = surface * np.uint8(SURFACE)
    labels[ignore] = IGNORE
    scan_mask = np.broadcast_to(disc, dims).copy()

    old_to_new = {int(old): new for new, old in enumerate(kept, start=1)}
    metadata: dict[str, Any] = {
        "seed": int(seed),
        "shape": list(dims),
        "stack_axis": stack_axis,
        "n_sheets": len(kept),
        "sheet_thickness_mean": [stack.thickness[old - 1] for old in kept],
        "close_pairs": _map_pairs(stack.close_pairs, old_to_new),
        "merged_pairs": _map_pairs(stack.merged_pairs, old_to_new),
        "torn_sheets": [old_to_new[k] for k in stack.torn_sheets if k in old_to_new],
        "n_debris": n_debris,
        "scan": scan,
        **imaging,
        **annotation,
        "surface_fraction": float((labels == SURFACE).mean()),
        "ignore_fraction": float(ignore.mean()),
    }
    return SyntheticFragment(image, labels, surface, instances, scan_mask, metadata)


def _renumber(instances: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """Drop sheet ids with no voxel left (cut away by the scan) and renumber the rest 1..n in order."""
    counts = np.bincount(instances.ravel())
    kept = [int(k) for k in np.nonzero(counts)[0] if k > 0]
    if kept == list(range(1, len(kept) + 1)):
        return instances, kept
    lut = np.zeros(len(counts), dtype=instances.dtype)
    lut[kept] = np.arange(1, len(kept) + 1)
    return lut[instances], kept


def _map_pairs(pairs: list[tuple[int, int]], old_to_new: dict[int, int]) -> list[list[int]]:
    return [[old_to_new[a], old_to_new[b]] for a, b in pairs if a in old_to_new and b in old_to_new]
