"""Domain randomisation: synthetic fragments spanning the ways real scrolls and scans differ.

A model trained on one generator's look (one packing, one contrast, one brightness) learns absolute
brightness instead of sheet shape and fails on a new scroll. :func:`randomised_fragment` draws every
fragment's look from :class:`DomainRanges` along three sub-range axes (:data:`SUBRANGE_AXES`), each
tag drawn 50/50 unless forced, so a benchmark can report per sub-range:

* ``packing``: ``packed`` (typical gap 0.5–4 voxels, pairs touching in spots, far more papyrus) or
  ``separated`` (wide gaps like the default fragment);
* ``contrast``: ``low`` (sheet/air contrast 35–80 grey levels under stronger noise and blur) or
  ``normal`` (today's look, slightly widened);
* ``intensity``: ``shifted`` (global scale 0.45–0.8 or 1.2–1.6 and/or offset −35…+60) or
  ``standard`` (scale ≈ 1, offset ≈ 0).

Everything else (thickness, anisotropic blur, scan radius, air beyond the outermost sheet, tears,
debris, tilt, stacking axis) is drawn independently every time. Each concern has its own random
stream, so forcing one axis's tag changes only that axis's values. The labels keep
:mod:`.fragment`'s meaning (1 = whole sheet body, 2 = ignore, 0 = background).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

import numpy as np

from .fragment import SyntheticFragment, make_fragment

#: The sub-range axes and their tags (first tag = the shifted domain, second = today's look).
SUBRANGE_AXES: dict[str, tuple[str, str]] = {
    "packing": ("packed", "separated"),
    "contrast": ("low", "normal"),
    "intensity": ("shifted", "standard"),
}

_SALT = 0x19D0  # separates the domain streams from make_fragment's own stream for the same seed
# A wide gap in a small volume with a small scan can leave (almost) no papyrus to learn from: retry
# the geometry (same look) a few times until the scan holds at least this share of sheet voxels.
_MIN_SURFACE_IN_SCAN = 0.01
_ATTEMPTS = 4
Range = tuple[float, float]


@dataclass(frozen=True)
class DomainRanges:
    """The ranges :func:`randomised_fragment` draws from (uniform unless said otherwise).

    Lengths in voxels, grey levels in uint8 units (before the global scale/offset).
    """

    # --- packing axis ---
    #: packed: typical air gap between neighbours (real scrolls are often compressed to 0–4 voxel gaps).
    packed_gap: Range = (0.5, 4.0)
    #: packed: mean share of a neighbouring pair's columns where the sheets touch (contacts, merged wraps).
    packed_touch_fraction: Range = (0.005, 0.04)
    #: separated: typical gap, drawn log-uniformly (default fragment 28–72; loose regions of a scroll).
    separated_gap: Range = (10.0, 64.0)
    # --- contrast axis (papyrus minus air grey levels, noise std before the blur, PSF sigma) ---
    #: normal: air grey level and papyrus contrast around today's 25–45 / 110–145.
    normal_air: Range = (20.0, 50.0)
    normal_contrast: Range = (100.0, 150.0)
    #: normal: correlated (pre-blur) noise std and PSF sigma around today's 40–60 / 0.8–1.1.
    normal_noise: Range = (35.0, 60.0)
    normal_psf: Range = (0.75, 1.2)
    #: normal: white (post-blur, detector-like) noise std; small.
    normal_white_noise: Range = (0.0, 3.0)
    #: low: a dim sheet/air contrast, as in low-energy or poorly reconstructed scans.
    low_air: Range = (20.0, 60.0)
    low_contrast: Range = (35.0, 80.0)
    #: low: stronger noise and blur, so the contrast-to-noise ratio is several times below normal.
    low_noise: Range = (40.0, 70.0)
    low_psf: Range = (1.1, 1.6)
    low_white_noise: Range = (2.0, 10.0)
    # --- intensity axis (applied after rendering: ``scale * ct + offset``, clipped to 1..255) ---
    #: shifted: global scale, from the dim or the bright band (50/50): other scan energy or windowing.
    shifted_scale_dim: Range = (0.45, 0.8)
    shifted_scale_bright: Range = (1.2, 1.6)
    #: shifted: global offset, excluding ``|offset| < shifted_offset_min`` (not a shift); scale only, offset
    #: only or both (1/3 each). The offset is then clamped so air stays >= ~4 and papyrus <= ~240 on
    #: average (a shift, not a wipe-out by clipping; a bright scale may bring its own negative offset).
    shifted_offset: Range = (-35.0, 60.0)
    shifted_offset_min: float = 12.0
    #: standard: scale and offset close to the identity.
    standard_scale: Range = (0.93, 1.07)
    standard_offset: Range = (-6.0, 6.0)
    # --- drawn independently every time ---
    #: Centre of the sheet thickness (voxels); per-voxel bounds centre ± 2.5 (at least 2), mean ± 0.75.
    thickness_centre: Range = (3.0, 8.0)
    #: Per-axis (z, y, x) factors on the PSF sigma (anisotropic resolution); each sigma capped below.
    psf_axis_factor: Range = (0.7, 1.5)
    max_psf_sigma: float = 2.2
    #: Scan cylinder radius as a fraction of half the smaller Y/X side (0.55: ~70 % of a cube is outside).
    scan_radius: Range = (0.55, 1.3)
    #: Probability of air beyond the scroll's outermost sheet, and the depth fraction it then takes.
    outer_air_probability: float = 0.25
    outer_air: Range = (0.15, 0.45)
    #: Probability that a sheet is torn, and the upper bound of the torn area fraction (low bound 0.005).
    hole_probability: Range = (0.2, 0.9)
    hole_fraction_max: Range = (0.01, 0.08)
    #: Unlabelled bright debris strands per 128³.
    debris_per_128: Range = (0.0, 6.0)
    #: Largest sheet tilt (degrees) away from the plane normal to the stacking axis.
    max_tilt_deg: Range = (20.0, 45.0)
    #: Probability of stacking along z, y, x (sheets mostly wrap around the scroll axis z).
    stack_axis_p: tuple[float, float, float] = (0.2, 0.4, 0.4)

    def validate(self) -> None:
        """Raise ValueError on an empty or out-of-bounds range (named, with the valid bounds)."""
        for item in fields(self):
            value = getattr(self, item.name)
            if item.name == "stack_axis_p" or not isinstance(value, tuple):
                continue
            floor = -255.0 if item.name.endswith("_offset") else 0.0  # offsets may be negative
            if not floor <= value[0] <= value[1]:
                raise ValueError(
                    f"DomainRanges.{item.name} must satisfy {floor:g} <= low <= high, got {value}"
                )
        if self.packed_gap[1] > 8:
            raise ValueError(f"DomainRanges.packed_gap must lie within 0–8 voxels, got {self.packed_gap}")
        if self.separated_gap[0] < 4:
            raise ValueError(f"DomainRanges.separated_gap low must be >= 4 voxels, got {self.separated_gap}")
        scales = (self.shifted_scale_dim[0], self.standard_scale[0])
        if min(self.psf_axis_factor[0], self.max_psf_sigma, *scales) <= 0:
            raise ValueError("DomainRanges PSF factors, max_psf_sigma and intensity scales must be positive")
        if self.thickness_centre[0] < 2:
            raise ValueError(
                f"DomainRanges.thickness_centre must be >= 2 voxels, got {self.thickness_centre}"
            )
        if self.scan_radius[0] <= 0 or not 0 <= self.outer_air[1] < 1:
            raise ValueError("DomainRanges.scan_radius must be positive and outer_air within [0, 1)")
        for name in ("packed_touch_fraction", "hole_fraction_max"):
            if getattr(self, name)[1] > 0.5:
                raise ValueError(f"DomainRanges.{name} must lie within [0, 0.5], got {getattr(self, name)}")
        for name in ("outer_air_probability",):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"DomainRanges.{name} must lie within [0, 1], got {getattr(self, name)}")
        p = np.asarray(self.stack_axis_p, dtype=float)
        if p.shape != (3,) or (p < 0).any() or not np.isclose(p.sum(), 1.0):
            raise ValueError(f"DomainRanges.stack_axis_p must be 3 probabilities summing to 1, got {p}")


def check_subranges(subranges: dict[str, str] | None) -> dict[str, str]:
    """Validate forced sub-range tags; ValueError lists the valid axes and tags."""
    forced = dict(subranges or {})
    valid = ", ".join(f"{axis}: {'/'.join(tags)}" for axis, tags in SUBRANGE_AXES.items())
    for axis, tag in forced.items():
        if axis not in SUBRANGE_AXES:
            raise ValueError(f"unknown sub-range axis {axis!r}; valid axes and tags: {valid}")
        if tag not in SUBRANGE_AXES[axis]:
            raise ValueError(f"unknown {axis} sub-range {tag!r}; valid axes and tags: {valid}")
    return forced


def _u(rng: np.random.Generator, bounds: Range) -> float:
    return float(rng.uniform(bounds[0], bounds[1]))


def _packing(rng: np.random.Generator, tag: str, r: DomainRanges) -> dict[str, Any]:
    if tag == "packed":
        gap = _u(rng, r.packed_gap)
        return {
            "packing": "tight",
            "gap_range": (gap, gap),
            "touch_fraction": _u(rng, r.packed_touch_fraction),
        }
    gap = float(np.exp(rng.uniform(np.log(r.separated_gap[0]), np.log(r.separated_gap[1]))))
    return {"gap_range": (gap, gap)}


def _contrast(rng: np.random.Generator, tag: str, r: DomainRanges) -> dict[str, Any]:
    prefix = "low_" if tag == "low" else "normal_"
    air, contrast, noise, psf, white = (
        _u(rng, getattr(r, prefix + name)) for name in ("air", "contrast", "noise", "psf", "white_noise")
    )
    return {
        "air_range": (air, air),
        "contrast_range": (contrast, contrast),
        "noise_range": (noise, noise),
        "psf_range": (psf, psf),
        "white_noise_std": white,
    }


def _intensity(rng: np.random.Generator, tag: str, r: DomainRanges, air: float, contrast: float) -> dict:
    if tag == "standard":
        return {"intensity_scale": _u(rng, r.standard_scale), "intensity_offset": _u(rng, r.standard_offset)}
    mode = ("scale", "offset", "both")[int(rng.integers(3))]
    band = r.shifted_scale_dim if rng.random() < 0.5 else r.shifted_scale_bright
    scale = _u(rng, band)
    low, high = r.shifted_offset
    gap = min(r.shifted_offset_min, -low, high) if low < 0 < high else 0.0
    offset = low + _u(rng, (0.0, high - low - 2 * gap))  # uniform over [low, -gap] ∪ [gap, high]
    offset += 2 * gap if offset > -gap else 0.0
    if mode == "offset":
        scale = 1.0
    elif mode == "scale":
        offset = 0.0
    scale = min(scale, 236.0 / contrast)  # the papyrus/air spread must fit in 4..240
    low, high = 4.0 - scale * air, 240.0 - scale * (air + contrast)
    return {"intensity_scale": scale, "intensity_offset": float(np.clip(offset, low, max(low, high)))}


def _independent(rng: np.random.Generator, r: DomainRanges, psf: float) -> dict[str, Any]:
    centre = _u(rng, r.thickness_centre)
    factors = [min(_u(rng, r.psf_axis_factor), r.max_psf_sigma / psf) for _ in range(3)]
    outer = _u(rng, r.outer_air) if rng.random() < r.outer_air_probability else 0.0
    return {
        "stack_axis": int(rng.choice(3, p=np.asarray(r.stack_axis_p) / sum(r.stack_axis_p))),
        "max_tilt_deg": _u(rng, r.max_tilt_deg),
        "thickness_range": (max(2, round(centre - 2.5)), max(2, round(centre + 2.5))),
        "mean_thickness_range": (max(2.0, centre - 0.75), centre + 0.75),
        "psf_axis_factors": tuple(factors),
        "scan_radius": _u(rng, r.scan_radius),
        "outer_air": outer,
        "hole_probability": _u(rng, r.hole_probability),
        "hole_fraction_range": (0.005, _u(rng, r.hole_fraction_max)),
        "debris_per_128": _u(rng, r.debris_per_128),
    }


def domain_options(
    seed: int = 0, *, ranges: DomainRanges | None = None, subranges: dict[str, str] | None = None
) -> tuple[dict[str, str], dict[str, Any]]:
    """Draw the sub-range tags and the :class:`.FragmentOptions` values of one randomised fragment.

    Independent of the shape. Returns ``(tags, options)``; ``options`` also holds ``fragment_seed``.
    """
    ranges = ranges if ranges is not None else DomainRanges()
    ranges.validate()
    forced = check_subranges(subranges)
    streams = np.random.SeedSequence([int(seed), _SALT]).spawn(5)
    tag_rng, pack_rng, contrast_rng, intensity_rng, other_rng = (np.random.default_rng(s) for s in streams)
    tags = {}
    for axis, choices in SUBRANGE_AXES.items():
        drawn = choices[0] if tag_rng.random() < 0.5 else choices[1]  # always drawn: forcing shifts nothing
        tags[axis] = forced.get(axis, drawn)
    options: dict[str, Any] = {"fragment_seed": int(tag_rng.integers(2**31))}
    options.update(_packing(pack_rng, tags["packing"], ranges))
    options.update(_contrast(contrast_rng, tags["contrast"], ranges))
    air, contrast = options["air_range"][0], options["contrast_range"][0]
    options.update(_intensity(intensity_rng, tags["intensity"], ranges, air, contrast))
    options.update(_independent(other_rng, ranges, options["psf_range"][0]))
    return tags, options


def randomised_fragment(
    shape: tuple[int, int, int] = (128, 128, 128),
    seed: int = 0,
    *,
    ranges: DomainRanges | None = None,
    subranges: dict[str, str] | None = None,
) -> SyntheticFragment:
    """A synthetic fragment with a randomised look (deterministic per ``shape``, ``seed``, ``subranges``).

    ``subranges`` forces the tag of any axis of :data:`SUBRANGE_AXES`, e.g. ``{"packing": "packed"}``.
    ``metadata["subranges"]`` holds every axis's tag, ``metadata["domain"]`` the drawn values (JSON).
    """
    tags, options = domain_options(seed, ranges=ranges, subranges=subranges)
    fragment_seed = options.pop("fragment_seed")
    for attempt in range(_ATTEMPTS):
        fragment = make_fragment(shape, seed=fragment_seed + attempt, **options)
        if fragment.surface[fragment.scan_mask].mean() >= _MIN_SURFACE_IN_SCAN:
            break
    domain = {name: list(value) if isinstance(value, tuple) else value for name, value in options.items()}
    metadata = {
        **fragment.metadata,
        "seed": int(seed),
        "fragment_seed": fragment_seed + attempt,
        "subranges": tags,
        "domain": domain,
    }
    return replace(fragment, metadata=metadata)
