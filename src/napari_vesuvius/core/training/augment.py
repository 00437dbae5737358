"""CT augmentations for training patches, in numpy/scipy (fast on CPU, no extra dependency).

Spatial augmentations are applied identically to image and label; labels are resampled with order 0
(nearest) and voxels that come from outside the volume become *ignore* (2), so they never count in the
loss. Small rotations and scalings are sampled as one 3×3 matrix and applied by
:func:`scipy.ndimage.affine_transform` directly while cropping (see :func:`source_half_extent`), so
the patch is filled with real data instead of padding. Mirroring and 90° rotations in the yx plane are
exact. Axis permutations involving z are off by default: in scroll volumes the sheets wrap around the
scroll axis (z) and the reconstruction has its own per-slice character, so z is not interchangeable
with y/x. Intensity augmentations (nnU-Net's set: noise, blur, brightness, contrast, gamma) act on
the normalised image only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from ..labels import IGNORE
from .config import AugmentConfig


def _rotation(axis: int, angle: float) -> np.ndarray:
    """3×3 rotation by ``angle`` (radians) in the plane of the two axes other than ``axis``."""
    a, b = [i for i in range(3) if i != axis]
    matrix = np.eye(3)
    cos, sin = math.cos(angle), math.sin(angle)
    matrix[a, a], matrix[a, b], matrix[b, a], matrix[b, b] = cos, -sin, sin, cos
    return matrix


def sample_spatial(rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray | None:
    """A random rotation/scaling matrix (output offset → source offset), or None for identity."""
    matrix = np.eye(3)
    changed = False
    if cfg.p_rotate > 0 and rng.random() < cfg.p_rotate:
        limit = math.radians(cfg.max_rotation_deg)
        for axis in range(3):
            matrix = matrix @ _rotation(axis, float(rng.uniform(-limit, limit)))
        changed = True
    if cfg.p_scale > 0 and rng.random() < cfg.p_scale:
        matrix = matrix * float(rng.uniform(*cfg.scale_range))
        changed = True
    return matrix if changed else None


def source_half_extent(patch_size: Sequence[int], matrix: np.ndarray) -> np.ndarray:
    """Half-size per axis of the source region the warped patch reads (corners mapped by ``matrix``)."""
    half = (np.asarray(patch_size, dtype=np.float64) - 1) / 2
    corners = np.array(np.meshgrid(*[(-h, h) for h in half], indexing="ij")).reshape(3, -1)
    return np.abs(matrix @ corners).max(axis=1)


def warp_patch(
    image: np.ndarray, label: np.ndarray, matrix: np.ndarray, centre: np.ndarray, patch_size: Sequence[int]
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a patch of ``patch_size`` around ``centre`` (coordinates in the given crops).

    The image uses linear interpolation (float32, 0 outside), the label nearest (ignore outside).
    """
    patch = tuple(int(p) for p in patch_size)
    offset = np.asarray(centre, dtype=np.float64) - matrix @ ((np.asarray(patch, dtype=np.float64) - 1) / 2)
    out_image = ndimage.affine_transform(
        image.astype(np.float32, copy=False),
        matrix,
        offset=offset,
        output_shape=patch,
        order=1,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )
    out_label = ndimage.affine_transform(
        label,
        matrix,
        offset=offset,
        output_shape=patch,
        order=0,
        mode="constant",
        cval=IGNORE,
        prefilter=False,
    )
    return out_image, out_label


def mirror_rotate(
    image: np.ndarray, label: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Random axis permutation (optional), 90° rotation in yx and mirroring, the same for both arrays."""
    if cfg.permute_axes and image.shape[0] == image.shape[1] == image.shape[2]:
        order = tuple(int(i) for i in rng.permutation(3))
        image, label = image.transpose(order), label.transpose(order)
    if cfg.rot90_yx:
        turns = int(rng.integers(4)) if image.shape[1] == image.shape[2] else 2 * int(rng.integers(2))
        if turns:
            image, label = np.rot90(image, turns, axes=(1, 2)), np.rot90(label, turns, axes=(1, 2))
    flips = tuple(axis for axis in cfg.mirror_axes if rng.random() < 0.5)
    if flips:
        image, label = np.flip(image, flips), np.flip(label, flips)
    return np.ascontiguousarray(image), np.ascontiguousarray(label)


def augment_intensity(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """Noise, blur, brightness, shift, contrast and gamma on a normalised float32 patch (nnU-Net order)."""
    out = np.asarray(image, dtype=np.float32)
    if cfg.p_noise > 0 and rng.random() < cfg.p_noise:
        std = math.sqrt(float(rng.uniform(*cfg.noise_variance)))
        out = out + rng.normal(0.0, std, out.shape).astype(np.float32)
    if cfg.p_blur > 0 and rng.random() < cfg.p_blur:
        out = ndimage.gaussian_filter(out, float(rng.uniform(*cfg.blur_sigma)), mode="nearest")
    if cfg.p_brightness > 0 and rng.random() < cfg.p_brightness:
        out = out * np.float32(rng.uniform(*cfg.brightness_range))
    if cfg.p_shift > 0 and rng.random() < cfg.p_shift:
        out = out + np.float32(rng.uniform(-cfg.shift_range, cfg.shift_range))
    if cfg.p_contrast > 0 and rng.random() < cfg.p_contrast:
        low, high, mean = out.min(), out.max(), out.mean()
        out = np.clip((out - mean) * np.float32(rng.uniform(*cfg.contrast_range)) + mean, low, high)
    if cfg.p_gamma > 0 and rng.random() < cfg.p_gamma:
        out = _gamma(out, float(rng.uniform(*cfg.gamma_range)))
    return out.astype(np.float32, copy=False)


def _gamma(image: np.ndarray, gamma: float) -> np.ndarray:
    """Gamma on the patch's own [min, max] range, keeping its mean and standard deviation."""
    low, high = float(image.min()), float(image.max())
    if high - low < 1e-6:
        return image
    mean, std = float(image.mean()), float(image.std())
    out = ((image - low) / (high - low)) ** gamma * (high - low) + low
    new_std = float(out.std())
    if new_std > 1e-8:
        out = (out - out.mean()) / new_std * std + mean
    return out.astype(np.float32)
