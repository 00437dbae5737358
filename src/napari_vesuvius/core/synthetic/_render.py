"""From sheet geometry to what a scanner and an annotator produce: the CT image and the ignore mask."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ._fields import coarse_noise_3d, smooth_noise_2d, upsample_linear, upsample_threshold
from ._options import FragmentOptions


def scan_disc(
    rng: np.random.Generator, shape: tuple[int, int, int], opts: FragmentOptions
) -> tuple[np.ndarray, dict]:
    """The scanned region's cross-section: a disc in (y, x), the cylinder axis along z.

    Returns the boolean (Y, X) disc and its centre/radius. By default the radius is at least half the
    smaller side, so the field-of-view edge only cuts the corners (and one side when the centre is off);
    a smaller ``scan_radius`` (down to ~0.5) leaves a large share of the volume outside the scan.
    """
    _, h, w = shape
    half = min(h, w) / 2
    factor = opts.scan_radius if opts.scan_radius is not None else rng.uniform(1.0, 1.25)
    radius = factor * half
    cy = (h - 1) / 2 + rng.uniform(-0.12, 0.12) * h
    cx = (w - 1) / 2 + rng.uniform(-0.12, 0.12) * w
    yy = np.arange(h, dtype=np.float32)[:, None] - cy
    xx = np.arange(w, dtype=np.float32)[None, :] - cx
    disc = yy * yy + xx * xx <= radius * radius
    return disc, {"centre_yx": (float(cy), float(cx)), "radius": float(radius)}


def add_debris(
    rng: np.random.Generator, density: np.ndarray, occupied: np.ndarray, opts: FragmentOptions
) -> int:
    """Draw a few loose bright fibres (curved strands, radius ~1) into the air gaps, in place.

    They are not papyrus sheets and stay unlabelled: a model has to learn sheet shape, not brightness.
    Returns the number of strands drawn.
    """
    shape = np.array(density.shape)
    count = int(rng.poisson(opts.debris_per_128 * density.size / 128**3))
    offsets = np.array([(0, 0, 0), (1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0), (0, 0, 1), (0, 0, -1)])
    for _ in range(count):
        start = rng.uniform(0, 1, 3) * (shape - 1)
        direction = rng.standard_normal(3)
        turn = rng.standard_normal(3) * 0.03
        steps = int(rng.uniform(20, 60))
        points = []
        pos = start.copy()
        for _ in range(steps):
            direction = direction / np.linalg.norm(direction) + turn
            pos = pos + 0.5 * direction / np.linalg.norm(direction)
            points.append(pos)
        vox = np.rint(np.array(points)).astype(np.intp)
        vox = (vox[:, None, :] + offsets[None, :, :]).reshape(-1, 3)
        keep = np.all((vox >= 0) & (vox < shape), axis=1)
        z, y, x = vox[keep].T
        free = ~occupied[z, y, x]
        density[z[free], y[free], x[free]] = np.maximum(
            density[z[free], y[free], x[free]], rng.uniform(0.5, 0.8)
        )
    return count


def render_ct(
    rng: np.random.Generator, density: np.ndarray, disc: np.ndarray, scan: dict, opts: FragmentOptions
) -> tuple[np.ndarray, dict]:
    """Turn relative density (modified in place) into a uint8 CT volume.

    Adds grey levels, beam-hardening cupping, ring artefacts, correlated noise, PSF blur, field of view.

    By default air/gaps ≈ 25–45, papyrus ≈ 140–190 before noise (``air_range``, ``contrast_range``);
    the noise is added before the PSF blur so it is spatially correlated like reconstructed CT noise,
    optional white noise after it. Outside the scan disc the value is exactly 0, inside it is at least
    1 (``ct > 0`` is the scanned region), also after the optional global scale/offset.
    """
    z, h, w = density.shape
    air = rng.uniform(*opts.air_range)
    contrast = rng.uniform(*opts.contrast_range)
    cy, cx = scan["centre_yx"]
    r = np.hypot(np.arange(h, dtype=np.float32)[:, None] - cy, np.arange(w, dtype=np.float32)[None, :] - cx)
    r_rel = r / scan["radius"]
    cupping = rng.uniform(4.0, 12.0) * r_rel**2  # beam hardening: brighter towards the field-of-view edge
    ring_profile = ndimage.gaussian_filter1d(rng.standard_normal(int(r.max()) + 2), 0.7) * rng.uniform(
        1.5, 4.0
    )
    rings = ring_profile[r.astype(np.intp)]
    shading = (cupping + rings + rng.uniform(3.0, 6.0) * smooth_noise_2d(rng, (h, w), 60.0)).astype(
        np.float32
    )
    drift = (rng.uniform(1.0, 3.0) * smooth_noise_2d(rng, (z, 1), 40.0)).astype(np.float32)
    # Uniform noise (4× cheaper to draw than normal) becomes Gaussian-like once the PSF averages it.
    noise_std = rng.uniform(*opts.noise_range)
    image = rng.random(density.shape, dtype=np.float32)
    image -= np.float32(0.5)
    image *= np.float32(noise_std * np.sqrt(12.0))
    density *= np.float32(contrast)
    image += density
    sigma = rng.uniform(*opts.psf_range)
    factors = tuple(float(f) for f in opts.psf_axis_factors)
    sigmas = sigma if factors == (1.0, 1.0, 1.0) else tuple(sigma * f for f in factors)
    image = ndimage.gaussian_filter(image, sigmas, truncate=2.5)
    imaging = {
        "air_level": float(air),
        "papyrus_contrast": float(contrast),
        "noise_std": float(noise_std),
        "psf_sigma": float(sigma),
    }
    if opts.white_noise_std > 0:
        # A jumped copy of the stream: the main stream (ignore mask, ...) stays as without white noise.
        white = np.random.Generator(rng.bit_generator.jumped()).random(density.shape, dtype=np.float32)
        white -= np.float32(0.5)
        white *= np.float32(opts.white_noise_std * np.sqrt(12.0))
        image += white
        del white
        imaging["white_noise_std"] = float(opts.white_noise_std)
    if factors != (1.0, 1.0, 1.0):
        imaging["psf_sigma_zyx"] = [sigma * f for f in factors]
    # Low-frequency terms pass the blur unchanged: add them after it; +0.5 makes the uint8 cast round.
    image += shading[None] + np.float32(air + 0.5)
    image += drift[:, :, None]
    scale, offset = float(opts.intensity_scale), float(opts.intensity_offset)
    if (scale, offset) != (1.0, 0.0):
        image *= np.float32(scale)
        image += np.float32(offset + 0.5 * (1.0 - scale))  # keeps the +0.5 rounding term unscaled
        imaging["intensity_scale"], imaging["intensity_offset"] = scale, offset
    np.clip(image, 1.0, 255.0, out=image)
    ct = image.astype(np.uint8)
    ct[:, ~disc] = 0
    return ct, imaging


def ignore_mask(
    rng: np.random.Generator, shape: tuple[int, int, int], disc: np.ndarray, opts: FragmentOptions
) -> tuple[np.ndarray, dict]:
    """Voxels an annotator left unlabelled: outside the scan, border slabs, irregular blobs.

    The blob threshold is chosen (on a coarse subsample) so the total hits the target fraction.
    """
    target = opts.ignore_fraction if opts.ignore_fraction is not None else rng.uniform(0.50, 0.60)
    ignore = np.broadcast_to(~disc, shape).copy()
    slabs = []
    if target > 0:
        for axis in range(3):
            for side in ("low", "high"):
                if rng.random() < 0.35:
                    width = max(1, round(rng.uniform(0.04, 0.15) * shape[axis]))
                    index = [slice(None)] * 3
                    index[axis] = slice(0, width) if side == "low" else slice(shape[axis] - width, None)
                    ignore[tuple(index)] = True
                    slabs.append({"axis": axis, "side": side, "width": width})
    fraction = float(ignore.mean())
    if target > fraction:
        scale = rng.uniform(16.0, 32.0)
        coarse, offset = coarse_noise_3d(rng, shape, scale)
        # The 2×-subsampled field is exactly the field at half scale: take the quantile there.
        half = tuple((n + 1) // 2 for n in shape)
        sample = upsample_linear(coarse, half, scale / 2, offset)[~ignore[::2, ::2, ::2]]
        if sample.size:
            share = (target - fraction) / (1.0 - fraction)
            ignore |= upsample_threshold(
                coarse, shape, scale, offset, float(np.quantile(sample, 1.0 - share))
            )
    return ignore, {"target_ignore_fraction": float(target), "slabs": slabs}
