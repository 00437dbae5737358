"""The post-processing configuration: one flat, frozen, JSON-serialisable dataclass.

The same config drives the Tune widget, the ``postprocess`` CLI and the submission export, so a
setting tuned in the viewer can be saved to a file and replayed exactly. It is flat (no nested
sections) so a sweep or a slider can change one field with ``dataclasses.replace(config, t_low=0.4)``.

Defaults follow what worked for the challenge winners (see docs/challenge.md, "Post-processing defaults"):
3D hysteresis 0.30/0.85, anisotropic closing z=2 / xy=1, dust removal under 100 voxels, gating to
the scanned region. Hole/cavity filling, opening, keep-k and the border margin are off by default:
they help some models and hurt others (filling 2D holes can join the loops of a folded sheet).
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Literal

from ..atomic import atomic_write_text
from ..errors import PathError

ThresholdMode = Literal["absolute", "percentile", "hysteresis"]
THRESHOLD_MODES: tuple[str, ...] = ("absolute", "percentile", "hysteresis")
CONFIG_VERSION = 1


class ConfigError(PathError):
    """A post-processing config (file or dict) has an unknown key or a bad value.

    Raised as ``ConfigError(source, problem)``; ``source`` is the config file (or None for a dict).
    """

    @property
    def source(self) -> str | None:
        """The config file (or other origin) the problem was found in, as text."""
        return None if self.path is None else str(self.path)


@dataclass(frozen=True)
class PostprocessConfig:
    """Every post-processing step and its parameters; radius/size 0 switches a step off.

    Probabilities are compared in [0, 1] (uint8 input is scaled by 1/255 first).
    """

    #: "absolute" (p >= threshold), "percentile" (a fraction of scanned voxels positive) or "hysteresis".
    threshold_mode: ThresholdMode = "hysteresis"
    #: absolute mode: keep p >= threshold.
    threshold: float = 0.5
    #: percentile mode: fraction of the voxels inside the scanned region that ends up positive.
    percentile_fraction: float = 0.05
    #: hysteresis mode: weak voxels (p >= t_low) 26-connected to a strong voxel (p >= t_high) are kept.
    t_low: float = 0.30
    t_high: float = 0.85
    #: binary opening with an ellipsoid of these radii (z, and y/x); 0/0 = off.
    opening_z: int = 0
    opening_xy: int = 0
    #: binary closing with an ellipsoid of these radii (z, and y/x); 0/0 = off. Never shrinks at the border.
    closing_z: int = 2
    closing_xy: int = 1
    #: fill 2D holes slice by slice along ``fill_holes_axis`` (0 = z); only holes of at most
    #: ``max_hole_size`` voxels when that is > 0.
    fill_holes: bool = False
    fill_holes_axis: int = 0
    max_hole_size: int = 0
    #: fill 3D cavities (background not connected to the volume faces); at most ``max_cavity_size`` if > 0.
    fill_cavities: bool = False
    max_cavity_size: int = 0
    #: remove 26-connected components with fewer voxels than this; 0 = off.
    dust_size: int = 100
    #: keep only the k largest 26-connected components; 0 = keep all.
    keep_largest: int = 0
    #: zero this many voxels at every face of the volume; 0 = off.
    margin: int = 0
    #: zero everything outside the scanned region (ct > 0) when a scan mask is given.
    gate_to_scan: bool = True

    def __post_init__(self) -> None:
        problems = _problems(self)
        if problems:
            raise ConfigError(None, "; ".join(problems))

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """A plain JSON-ready dict (with a ``version`` key)."""
        return {"version": CONFIG_VERSION, **dataclasses.asdict(self)}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> PostprocessConfig:
        """Build a config from a dict; missing keys take defaults, unknown keys or bad values raise."""
        if not isinstance(data, dict):
            raise ConfigError(source, f"expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        version = data.pop("version", CONFIG_VERSION)
        if version != CONFIG_VERSION:
            raise ConfigError(source, f"key 'version': unsupported config version {version!r}")
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                source, f"unknown key(s) {', '.join(map(repr, unknown))}; known: {sorted(known)}"
            )
        values: dict[str, Any] = {}
        for name, value in data.items():
            values[name] = _coerce(name, value, known[name].type, source)
        try:
            return cls(**values)
        except ConfigError as error:
            raise ConfigError(source, error.problem) from None

    @classmethod
    def from_json(cls, text: str, source: str | Path | None = None) -> PostprocessConfig:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise ConfigError(source, f"not valid JSON: {error}") from None
        return cls.from_dict(data, source)

    @classmethod
    def load(cls, path: str | Path) -> PostprocessConfig:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(path, "config file not found") from None
        except (OSError, UnicodeDecodeError) as error:
            raise ConfigError(path, f"cannot read config: {error}") from None
        return cls.from_json(text, path)

    def save(self, path: str | Path) -> Path:
        """Write the config as JSON atomically (temporary sibling, then ``os.replace``)."""
        path = Path(path)
        if not path.parent.is_dir():
            raise ConfigError(path, "parent folder does not exist")
        atomic_write_text(path, self.to_json() + "\n")
        return path

    # ------------------------------------------------------------------ helpers for callers
    @property
    def uses_global_context(self) -> bool:
        """True when a step needs the whole volume (hysteresis, percentile, components, 3D cavities)."""
        return (
            self.threshold_mode != "absolute"
            or self.dust_size > 0
            or self.keep_largest > 0
            or self.fill_cavities
            or (self.fill_holes and self.fill_holes_axis != 0)
        )


_TYPES = {"int": int, "float": float, "bool": bool, "str": str}


def _coerce(name: str, value: Any, annotation: Any, source: str | Path | None) -> Any:
    """Check one JSON value against the field type (ints are accepted for floats, nothing else)."""
    kind = str(annotation)
    if kind == "ThresholdMode":
        if value not in THRESHOLD_MODES:
            raise ConfigError(source, f"key {name!r}: {value!r} is not one of {list(THRESHOLD_MODES)}")
        return value
    expected = _TYPES[kind]
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if expected is int and isinstance(value, float) and value.is_integer():
        return int(value)
    if not isinstance(value, expected) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(source, f"key {name!r}: expected {kind}, got {value!r}")
    return value


def _problems(config: PostprocessConfig) -> list[str]:
    problems: list[str] = []

    def check(ok: bool, message: str) -> None:
        if not ok:
            problems.append(message)

    check(
        config.threshold_mode in THRESHOLD_MODES,
        f"key 'threshold_mode': {config.threshold_mode!r} is not one of {list(THRESHOLD_MODES)}",
    )
    for name in ("threshold", "t_low", "t_high"):
        value = getattr(config, name)
        check(
            isinstance(value, (int, float)) and math.isfinite(value) and 0.0 <= value <= 1.0,
            f"key {name!r}: {value!r} must be a number in [0, 1]",
        )
    fraction = config.percentile_fraction
    check(
        isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0.0 < fraction <= 1.0,
        f"key 'percentile_fraction': {fraction!r} must be in (0, 1]",
    )
    if not problems:
        check(
            config.t_low <= config.t_high,
            f"key 't_low': {config.t_low} must not exceed t_high {config.t_high}",
        )
    for name in (
        "opening_z",
        "opening_xy",
        "closing_z",
        "closing_xy",
        "max_hole_size",
        "max_cavity_size",
        "dust_size",
        "keep_largest",
        "margin",
    ):
        value = getattr(config, name)
        check(
            isinstance(value, int) and not isinstance(value, bool) and value >= 0,
            f"key {name!r}: {value!r} must be a non-negative integer",
        )
    for name in ("opening_z", "opening_xy", "closing_z", "closing_xy"):
        value = getattr(config, name)
        check(
            not isinstance(value, int) or value <= 16, f"key {name!r}: radius {value} is above the limit 16"
        )
    check(
        config.fill_holes_axis in (0, 1, 2) and not isinstance(config.fill_holes_axis, bool),
        f"key 'fill_holes_axis': {config.fill_holes_axis!r} must be 0 (z), 1 (y) or 2 (x)",
    )
    for name in ("fill_holes", "fill_cavities", "gate_to_scan"):
        check(isinstance(getattr(config, name), bool), f"key {name!r}: must be true or false")
    return problems
