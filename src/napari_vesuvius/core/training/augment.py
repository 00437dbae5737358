"""CT augmentations for training patches, in numpy/scipy (fast on CPU, no extra dependency).

Spatial augmentations are applied identically to image and label; labels are resampled with order 0
(nearest) and voxels that come from outside the volume become *ignore* (2), so they never count in the
loss. Small rotations and scalings are sampled as one 3×3 matrix and applied by
:func:`scipy.ndimage.affine_transform` directly while cropping (see :func:`source_half_extent`), so
the patch is filled with real data instead of padding. Mirroring and 90° rotations in the yx plane are
exact. Axis permutations involving z are off by default: in scroll volumes the sheets wrap around the
scroll axis (z) and the reconstruction has its own per-slice character, so z is not interchangeable
with y/x. Intensity augmentations act on the normalised image only: nnU-Net v2's default set and order
(noise, blur, brightness, contrast, simulated low resolution, inverted gamma, gamma) with wider ranges
and an additive shift; :class:`.config.AugmentConfig` lists each one against nnU-Net's. They are
reimplemented here rather than taken from batchgeneratorsv2 so that every draw comes from the
sampler's ``numpy.random.Generator`` (a batch stays a pure function of its seed, in any thread);
``benchmarks/bench_augment.py`` compares the speed, the tests the outputs.
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


def sample_around_one(rng: np.random.Generator, value_range: Sequence[float]) -> float:
    """A factor drawn as nnU-Net's ``BGContrast``: half the time in ``[low, 1]``, else in ``[1, high]``.

    Uniform over an asymmetric range such as gamma's 0.7-1.5 would favour factors above 1; this keeps
    darkening and brightening equally likely. A range entirely on one side of 1 is drawn uniformly.
    """
    low, high = float(value_range[0]), float(value_range[1])
    if low >= 1.0 or high <= 1.0:
        return float(rng.uniform(low, high))
    if rng.random() < 0.5:
        return float(rng.uniform(low, 1.0))
    return float(rng.uniform(1.0, high))


def augment_intensity(image: np.ndarray, rng: np.random.Generator, cfg: AugmentConfig) -> np.ndarray:
    """nnU-Net's intensity augmentations, in its order, on a normalised float32 patch.

    Noise, blur (a sigma per axis), brightness (×), shift (+, ours), contrast, simulated low
    resolution, inverted gamma, gamma. Each is drawn with its own probability from ``rng``.
    """
    out = np.asarray(image, dtype=np.float32)
    if cfg.p_noise > 0 and rng.random() < cfg.p_noise:
        std = math.sqrt(float(rng.uniform(*cfg.noise_variance)))
        noise = rng.standard_normal(out.shape, dtype=np.float32)
        noise *= np.float32(std)
        noise += out
        out = noise
    if cfg.p_blur > 0 and rng.random() < cfg.p_blur:
        sigmas = [float(rng.uniform(*cfg.blur_sigma)) for _ in range(out.ndim)]
        out = ndimage.gaussian_filter(out, sigmas, mode="mirror")
    if cfg.p_brightness > 0 and rng.random() < cfg.p_brightness:
        out = out * np.float32(sample_around_one(rng, cfg.brightness_range))
    if cfg.p_shift > 0 and rng.random() < cfg.p_shift:
        out = out + np.float32(rng.uniform(-cfg.shift_range, cfg.shift_range))
    if cfg.p_contrast > 0 and rng.random() < cfg.p_contrast:
        out = contrast(out, sample_around_one(rng, cfg.contrast_range))
    if cfg.p_low_resolution > 0 and rng.random() < cfg.p_low_resolution:
        out = simulate_low_resolution(out, float(rng.uniform(*cfg.low_resolution_zoom)))
    if cfg.p_invert_gamma > 0 and rng.random() < cfg.p_invert_gamma:
        out = -gamma(-out, sample_around_one(rng, cfg.gamma_range))
    if cfg.p_gamma > 0 and rng.random() < cfg.p_gamma:
        out = gamma(out, sample_around_one(rng, cfg.gamma_range))
    return out.astype(np.float32, copy=False)


def contrast(image: np.ndarray, factor: float) -> np.ndarray:
    """Scale deviations from the patch mean by ``factor``, clipped to the patch's range (nnU-Net)."""
    low, high, mean = image.min(), image.max(), image.mean(dtype=np.float64)
    return np.clip((image - np.float32(mean)) * np.float32(factor) + np.float32(mean), low, high)


def gamma(image: np.ndarray, exponent: float) -> np.ndarray:
    """Gamma on the patch's own [min, max] range, keeping its mean and standard deviation (nnU-Net).

    ``-gamma(-image, g)`` is nnU-Net's inverted gamma: the curve bends the other way, so bright
    structure is compressed where plain gamma compresses dark structure.
    """
    low, high = float(image.min()), float(image.max())
    if high - low < 1e-6:
        return image
    mean, std = float(image.mean(dtype=np.float64)), float(image.std(dtype=np.float64))
    out = image - np.float32(low)  # a new array: the steps below work in place on it
    out *= np.float32(1.0 / (high - low))
    np.power(out, np.float32(exponent), out=out)
    new_mean, new_std = float(out.mean(dtype=np.float64)), float(out.std(dtype=np.float64))
    if new_std * (high - low) > 1e-8:  # keep mean and std: one affine map from the [0, 1] curve
        out *= np.float32(std / new_std)
        out += np.float32(mean - new_mean * std / new_std)
    else:
        out *= np.float32(high - low)
        out += np.float32(low)
    return out.astype(np.float32, copy=False)


def simulate_low_resolution(image: np.ndarray, zoom: float) -> np.ndarray:
    """Downsample by ``zoom`` (nearest) and interpolate back to the patch shape (linear), every axis alike.

    batchgeneratorsv2's ``SimulateLowResolutionTransform`` as nnU-Net v2 uses it (``interpolate``
    with ``nearest-exact`` then ``trilinear``, ``align_corners=False``), in numpy: fine detail below
    the coarser grid is lost, the patch keeps its shape and, roughly, its statistics.
    """
    shape = image.shape
    small = tuple(max(1, round(n * zoom)) for n in shape)
    if small == shape:
        return image
    index = [_nearest_exact_index(n, m) for n, m in zip(shape, small, strict=True)]
    out = image[np.ix_(*index)]
    for axis, n in enumerate(shape):
        out = _linear_resize_axis(out, axis, n)
    return np.ascontiguousarray(out, dtype=np.float32)


def _nearest_exact_index(size: int, small: int) -> np.ndarray:
    """Source indices of torch's ``nearest-exact`` resize from ``size`` to ``small`` (float32 as torch)."""
    scale = np.float32(size / small)
    source = np.floor((np.arange(small, dtype=np.float32) + np.float32(0.5)) * scale).astype(np.intp)
    return np.minimum(source, size - 1)


def _linear_resize_axis(array: np.ndarray, axis: int, size: int) -> np.ndarray:
    """Linear interpolation of one axis to ``size`` samples (pixel centres, edges clamped, as torch)."""
    n = array.shape[axis]
    if n == size:
        return array
    source = np.maximum((np.arange(size) + 0.5) * (n / size) - 0.5, 0.0)
    lower = np.minimum(np.floor(source).astype(np.intp), n - 1)
    upper = np.minimum(lower + 1, n - 1)
    weight_shape = [1] * array.ndim
    weight_shape[axis] = size
    weight = (source - lower).astype(np.float32).reshape(weight_shape)
    a, b = np.take(array, lower, axis=axis), np.take(array, upper, axis=axis)
    return a + (b - a) * weight
