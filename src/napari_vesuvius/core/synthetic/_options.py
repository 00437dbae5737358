"""Tunable knobs of the synthetic fragment, with defaults matched to the challenge statistics."""

from __future__ import annotations

from dataclasses import dataclass, fields


@dataclass(frozen=True)
class FragmentOptions:
    """Options for :func:`make_fragment`; every range is ``(low, high)`` sampled uniformly per fragment.

    Lengths are in voxels, grey levels are uint8 units. Defaults give, at 320³: surface ≈ 3–8 % of
    voxels, ignore ≈ 50–60 %, sheet thickness 3–8 (mean ≈ 5.5–6), a few near-touching sheet pairs and
    tears. Every option added for domain randomisation (``packing`` onwards, :mod:`.domain`) defaults to
    today's behaviour and draws no extra random number unless it departs from its default, so
    ``make_fragment(shape, seed)`` stays bit-identical.
    """

    #: Output axis the sheets are stacked along (0 = z, 1 = y, 2 = x); None picks one (z 20 %, y/x 40 % each).
    stack_axis: int | None = None
    #: Largest angle between the sheets and the plane normal to ``stack_axis`` (rotation around z).
    max_tilt_deg: float = 35.0
    #: Per-voxel thickness bounds of a sheet, measured along ``stack_axis``.
    thickness_range: tuple[int, int] = (3, 8)
    #: Range of the mean thickness of one sheet (it varies smoothly by about ±1 voxel around it).
    mean_thickness_range: tuple[float, float] = (5.0, 7.5)
    #: Range of the fragment's typical air gap between neighbouring sheets (each gap varies ±30 % around it).
    gap_range: tuple[float, float] = (28.0, 72.0)
    #: Probability that a neighbouring pair converges to a 1–3 voxel gap (at least one pair always does).
    close_pair_probability: float = 0.2
    #: Probability that one converging pair touches (merges) in a small spot.
    merge_probability: float = 0.2
    #: Probability that a sheet has tears (the sheet crossing the centre always has one).
    hole_probability: float = 0.5
    #: Range of the fraction of a torn sheet's area that is missing.
    hole_fraction_range: tuple[float, float] = (0.005, 0.03)
    #: Unlabelled bright debris strands per 128³ of volume (loose fibres in the gaps).
    debris_per_128: float = 3.0
    #: Target fraction of voxels labelled 2 (ignore); None draws it from 0.50–0.60; 0 gives no slabs/blobs.
    ignore_fraction: float | None = None
    #: Scan cylinder radius as a fraction of half the smaller of Y and X; None draws 1.0–1.25.
    scan_radius: float | None = None
    #: Range of the standard deviation of the noise added before the blur (grey levels).
    noise_range: tuple[float, float] = (40.0, 60.0)
    #: Range of the Gaussian point-spread-function sigma (voxels).
    psf_range: tuple[float, float] = (0.8, 1.1)
    #: "wide": ``gap_range`` is the typical gap (>= 4) and close/merged pairs are made separately;
    #: "tight": every gap is tight (``gap_range`` within 0–8, floored at 1 voxel by the 26-separation)
    #: and each pair touches over about ``touch_fraction`` of its columns (packed scroll regions).
    packing: str = "wide"
    #: Tight packing only: mean fraction of a neighbouring pair's columns where the two sheets touch.
    touch_fraction: float = 0.02
    #: Range of the air (gap) grey level and of the papyrus-minus-air contrast (grey levels, before noise).
    air_range: tuple[float, float] = (25.0, 45.0)
    contrast_range: tuple[float, float] = (110.0, 145.0)
    #: Per-axis (z, y, x) factors on the drawn PSF sigma: anisotropic blur (reconstruction, slice spacing).
    psf_axis_factors: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: Std of white (uncorrelated, detector-like) noise added after the blur (grey levels); 0 = none.
    white_noise_std: float = 0.0
    #: Global intensity transform after rendering, ``scale * ct + offset`` (scan energy, windowing), then
    #: clipped to 1..255 inside the scan; outside the scan stays exactly 0.
    intensity_scale: float = 1.0
    intensity_offset: float = 0.0
    #: Fraction of the depth along ``stack_axis`` beyond the scroll's outermost sheet (air inside the scan,
    #: bounded by a sheet surface); 0 = sheets everywhere.
    outer_air: float = 0.0

    @classmethod
    def from_kwargs(cls, **options: object) -> FragmentOptions:
        """Build options from keyword arguments, rejecting unknown names with the list of valid ones."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(options) - known)
        if unknown:
            raise TypeError(f"unknown synthetic fragment option(s) {unknown}; valid: {sorted(known)}")
        made = cls(**options)  # type: ignore[arg-type]
        made.validate()
        return made

    def validate(self) -> None:
        """Raise ValueError on inconsistent values (empty ranges, probabilities outside [0, 1])."""
        if self.stack_axis not in (None, 0, 1, 2):
            raise ValueError(f"stack_axis must be 0, 1, 2 or None, got {self.stack_axis!r}")
        lo, hi = self.thickness_range
        if not 1 <= lo <= hi:
            raise ValueError(f"thickness_range must satisfy 1 <= low <= high, got {self.thickness_range}")
        ranges = ("mean_thickness_range", "gap_range", "hole_fraction_range", "noise_range", "psf_range")
        for name in (*ranges, "air_range", "contrast_range"):
            low, high = getattr(self, name)
            if not 0 <= low <= high:
                raise ValueError(f"{name} must satisfy 0 <= low <= high, got {(low, high)}")
        for name in ("close_pair_probability", "merge_probability", "hole_probability", "touch_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be within [0, 1], got {getattr(self, name)}")
        if self.ignore_fraction is not None and not 0.0 <= self.ignore_fraction < 1.0:
            raise ValueError(f"ignore_fraction must be within [0, 1), got {self.ignore_fraction}")
        if self.scan_radius is not None and self.scan_radius <= 0:
            raise ValueError(f"scan_radius must be positive, got {self.scan_radius}")
        if self.packing not in ("wide", "tight"):
            raise ValueError(f"packing must be 'wide' or 'tight', got {self.packing!r}")
        if self.packing == "wide" and self.gap_range[0] < 4:
            raise ValueError(
                f"gap_range low must be >= 4 voxels (close pairs are made separately), got {self.gap_range}"
                "; use packing='tight' for tightly packed sheets"
            )
        if self.packing == "tight" and self.gap_range[1] > 8:
            raise ValueError(
                f"with packing='tight' gap_range must lie within 0–8 voxels, got {self.gap_range}"
            )
        if len(self.psf_axis_factors) != 3 or min(self.psf_axis_factors) <= 0:
            raise ValueError(
                f"psf_axis_factors must be 3 positive numbers (z, y, x), got {self.psf_axis_factors}"
            )
        if self.white_noise_std < 0:
            raise ValueError(f"white_noise_std must be >= 0, got {self.white_noise_std}")
        if not 0.0 <= self.outer_air < 1.0:
            raise ValueError(f"outer_air must be within [0, 1), got {self.outer_air}")
        if self.intensity_scale <= 0:
            raise ValueError(f"intensity_scale must be positive, got {self.intensity_scale}")
