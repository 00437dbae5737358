"""Volumes in RAM and the patch sampler with foreground oversampling (as nnU-Net).

A fraction ``foreground_fraction`` (default 1/3) of patches is centred on a random surface voxel
(clipped so the patch stays inside the padded volume); the others are placed uniformly. A patch that
would be entirely *ignore* is redrawn, and after a few tries it is centred on a random labelled voxel,
so no patch without supervision ever reaches the loss. Patches reaching past a border are padded:
image with 0, label with ignore. Every patch is drawn from a ``numpy.random.Generator`` the caller
passes in, so a batch is a pure function of its seed (exact resume, deterministic prefetch threads).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from napari_vesuvius.core.volume.io import open_labels, open_volume

from ..errors import VolumeError, warn_user
from ..inference.intensity import VoxelCheck, conversion_for
from ..inference.model_api import Normalization
from ..labels import IGNORE, SURFACE
from .augment import augment_intensity, mirror_rotate, sample_spatial, source_half_extent, warp_patch
from .config import AugmentConfig
from .data import VolumeSource

#: At most this many surface voxel coordinates are kept per volume to centre foreground patches on.
MAX_FOREGROUND_COORDS = 100_000
#: Random placements tried before a patch is centred on a labelled voxel.
PLACEMENT_TRIES = 10
#: Background voxels with two different surface components within this many voxels (a cube of side
#: 2r+1) are gap voxels: gaps of up to 2r - 1 voxels between two sheets are marked.
GAP_RADIUS = 2


def _check_labels(label: np.ndarray, path: object) -> np.ndarray:
    """Validate label values (0/1/2 only, not all ignore) and return them as uint8."""
    if label.dtype == np.uint8:
        counts = np.bincount(label.ravel(), minlength=3)
        bad = np.flatnonzero(counts[3:]) + 3
    else:
        values = np.unique(label)
        bad = values[~np.isin(values, (0, 1, 2))]
        counts = np.array([np.count_nonzero(label == v) for v in (0, 1, 2)])
    if bad.size:
        raise VolumeError(path, f"label values must be 0, 1 or 2; found {', '.join(str(v) for v in bad[:8])}")
    if counts[0] + counts[1] == 0:
        raise VolumeError(path, "every voxel is ignore (2): nothing to train on")
    return label.astype(np.uint8, copy=False)


def mark_gaps(label: np.ndarray, radius: int = GAP_RADIUS) -> np.ndarray:
    """A copy of ``label`` with background voxels between two separate surface components set to GAP.

    Components are 26-connected (as the VOI term of the metric counts them); a background voxel is a
    gap voxel when the cube of side ``2·radius + 1`` around it holds voxels of two different ones.
    """
    from .loss import GAP

    components, count = ndimage.label(label == SURFACE, structure=np.ones((3, 3, 3), dtype=bool))
    out = label.copy()
    if count < 2:
        return out
    size = 2 * int(radius) + 1
    highest = ndimage.maximum_filter(components, size=size, mode="constant", cval=0)
    lowest = ndimage.minimum_filter(
        np.where(components > 0, components, count + 1), size=size, mode="constant", cval=count + 1
    )
    out[(label == 0) & (highest > 0) & (lowest <= count) & (highest != lowest)] = GAP
    return out


def _training_normalization(normalization: Normalization, image: np.ndarray, path: object) -> Normalization:
    """The normalisation for one training volume, by the same intensity rule as inference.

    Z-score statistics are fitted on the whole volume by :meth:`Normalization.fit`, the call every
    inference path makes (with ``use_mask``: over the scanned region only), so a patch is normalised
    exactly as the model will see that volume at inference; every patch of a volume shares them.
    A model that records its intensity range (built-in uint8 models) sees every volume on that range:
    uint16 / float [0, 1] volumes are converted as at inference (announced once per volume), other
    dtypes are refused, and a float volume must be finite (and in [0, 1] when it is mapped).
    """
    try:
        conversion = conversion_for(image.dtype, normalization)
    except ValueError as error:
        raise VolumeError(path, str(error)) from None
    VoxelCheck(path, conversion.unit_range)(image)
    if not conversion.identity:
        warn_user(path, f"intensities converted for training: {conversion.rule}")
    return conversion.adapt(normalization).fit(image)


@dataclass
class TrainingVolume:
    """One image/label pair, read into RAM on first use (thread-safe).

    ``with_gaps``: background voxels in narrow gaps between surface components become GAP
    (:func:`mark_gaps`), for a loss that weighs them (see :mod:`.loss`); not for scoring.
    """

    source: VolumeSource
    normalization: Normalization
    with_gaps: bool = False
    _image: np.ndarray | None = field(default=None, repr=False)
    _label: np.ndarray | None = field(default=None, repr=False)
    _foreground: np.ndarray | None = field(default=None, repr=False)
    _labelled: np.ndarray | None = field(default=None, repr=False)
    _norm: Normalization | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load(self) -> None:
        """Read image and label, validate them and index surface and labelled voxels."""
        with self._lock:
            if self._image is not None:
                return
            with open_volume(self.source.image) as volume:
                image = np.asarray(volume.data.compute(scheduler="threads"))
            with open_labels(self.source.label, image.shape) as volume:
                label = _check_labels(np.asarray(volume.data.compute(scheduler="threads")), self.source.label)
            if self.with_gaps:
                label = mark_gaps(label)
            rng = np.random.default_rng(0)
            foreground = np.argwhere(label == SURFACE).astype(np.int32)
            if len(foreground) > MAX_FOREGROUND_COORDS:
                foreground = foreground[rng.choice(len(foreground), MAX_FOREGROUND_COORDS, replace=False)]
            labelled = np.argwhere(label[::4, ::4, ::4] != IGNORE).astype(np.int32) * 4
            if len(labelled) == 0:
                labelled = np.argwhere(label != IGNORE).astype(np.int32)[:MAX_FOREGROUND_COORDS]
            self._norm = _training_normalization(self.normalization, image, self.source.image)
            self._image, self._label, self._foreground, self._labelled = image, label, foreground, labelled

    @property
    def image(self) -> np.ndarray:
        self.load()
        assert self._image is not None
        return self._image

    @property
    def label(self) -> np.ndarray:
        self.load()
        assert self._label is not None
        return self._label

    @property
    def foreground(self) -> np.ndarray:
        """``(N, 3)`` surface voxel coordinates (a random subset of at most MAX_FOREGROUND_COORDS)."""
        self.load()
        assert self._foreground is not None
        return self._foreground

    @property
    def labelled(self) -> np.ndarray:
        """``(N, 3)`` coordinates of non-ignore voxels on a stride-4 grid."""
        self.load()
        assert self._labelled is not None
        return self._labelled

    @property
    def fitted_normalization(self) -> Normalization:
        self.load()
        assert self._norm is not None
        return self._norm


def crop_padded(array: np.ndarray, start: Sequence[int], size: Sequence[int], pad_value: float) -> np.ndarray:
    """``array[start:start+size]`` where parts outside the array are ``pad_value``."""
    start = [int(s) for s in start]
    size = [int(s) for s in size]
    lo = [max(0, s) for s in start]
    hi = [min(n, s + k) for n, s, k in zip(array.shape, start, size, strict=True)]
    stop = [s + k for s, k in zip(start, size, strict=True)]
    if lo == start and hi == stop:
        return array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    out = np.full(size, pad_value, dtype=array.dtype)
    if all(b > a for a, b in zip(lo, hi, strict=True)):
        dst = tuple(slice(a - s, b - s) for a, b, s in zip(lo, hi, start, strict=True))
        out[dst] = array[lo[0] : hi[0], lo[1] : hi[1], lo[2] : hi[2]]
    return out


class PatchSampler:
    """Draws augmented ``(image, label)`` patches from a list of volumes (see the module docstring)."""

    def __init__(
        self,
        volumes: Sequence[TrainingVolume],
        patch_size: Sequence[int],
        foreground_fraction: float = 1 / 3,
        augment: AugmentConfig | None = None,
    ) -> None:
        if not volumes:
            raise ValueError("PatchSampler needs at least one volume")
        self.volumes = list(volumes)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.foreground_fraction = float(foreground_fraction)
        self.augment = augment

    def _start_bounds(self, shape: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
        """Lowest and highest patch start per axis (negative when the volume is smaller: padding)."""
        patch, shape_arr = np.asarray(self.patch_size), np.asarray(shape)
        need = np.maximum(patch - shape_arr, 0)
        low = -(need // 2)
        high = shape_arr + need // 2 + need % 2 - patch
        return low, high

    def _centred_start(self, coord: np.ndarray, shape: Sequence[int]) -> np.ndarray:
        low, high = self._start_bounds(shape)
        return np.clip(coord - np.asarray(self.patch_size) // 2, low, high)

    def _extract(
        self, volume: TrainingVolume, start: np.ndarray, matrix: np.ndarray | None
    ) -> tuple[np.ndarray, np.ndarray]:
        if matrix is None:
            image = crop_padded(volume.image, start, self.patch_size, 0)
            label = crop_padded(volume.label, start, self.patch_size, IGNORE)
            return image, label
        centre = start + (np.asarray(self.patch_size) - 1) / 2
        half = source_half_extent(self.patch_size, matrix)
        lo = np.floor(centre - half).astype(int) - 1
        size = np.ceil(centre + half).astype(int) + 2 - lo
        image = crop_padded(volume.image, lo, size, 0)
        label = crop_padded(volume.label, lo, size, IGNORE)
        return warp_patch(image, label, matrix, centre - lo, self.patch_size)

    def sample(
        self, rng: np.random.Generator, force_foreground: bool | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """One patch: float32 normalised image and uint8 label, both ``patch_size``.

        ``force_foreground`` None draws it with probability ``foreground_fraction``.
        """
        volume = self.volumes[int(rng.integers(len(self.volumes)))]
        if force_foreground is None:
            force_foreground = bool(rng.random() < self.foreground_fraction)
        shape = volume.image.shape
        matrix = sample_spatial(rng, self.augment) if self.augment is not None else None
        image = label = None
        for attempt in range(PLACEMENT_TRIES + 1):
            if attempt == PLACEMENT_TRIES:
                coord = volume.labelled[int(rng.integers(len(volume.labelled)))]
                start, matrix = self._centred_start(coord, shape), None
            elif force_foreground and len(volume.foreground):
                coord = volume.foreground[int(rng.integers(len(volume.foreground)))]
                start = self._centred_start(coord, shape)
            else:
                low, high = self._start_bounds(shape)
                start = np.array([rng.integers(a, b + 1) for a, b in zip(low, high, strict=True)])
            image, label = self._extract(volume, start, matrix)
            if np.any(label != IGNORE):
                break
        assert image is not None and label is not None
        if self.augment is not None:
            image, label = mirror_rotate(image, label, rng, self.augment)
        image = volume.fitted_normalization.apply(image)
        if self.augment is not None:
            image = augment_intensity(image, rng, self.augment)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(label, dtype=np.uint8)

    def batch(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(B, 1, Z, Y, X)`` float32 images and ``(B, Z, Y, X)`` uint8 labels."""
        pairs = [self.sample(rng) for _ in range(int(batch_size))]
        images = np.stack([p[0] for p in pairs])[:, None]
        labels = np.stack([p[1] for p in pairs])
        return images, labels
