"""The sliding-window settings, held once: :class:`SlidingWindowSettings` and its CLI options.

Every way of running the network (in-memory engine, block-wise scroll runs, the submission pipeline,
the CLI and the Inference / Export docks) takes one frozen, validated settings object instead of
repeating ``step, gaussian, tta_axes, …`` keyword arguments. ``to_dict`` / ``from_dict`` give the
JSON form stored in layer metadata, zarr attributes and scroll fingerprints. Like nnU-Net's
``nnUNetPredictor`` and MONAI's ``SlidingWindowInferer``: ``step`` is the tile stride as a fraction of
the patch, ``gaussian`` blends tiles with a Gaussian importance map, ``tta_axes`` mirrors over every
combination of these axes (0=z, 1=y, 2=x) and averages the logits.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from napari_vesuvius.core.errors import VesuviusError

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OUTPUT_DTYPES = ("float16", "float32", "uint8")


class SettingsError(VesuviusError, ValueError):
    """A sliding-window setting out of range (a ``ValueError``; the CLI prints it as one line)."""


def parse_tta(text: str) -> tuple[int, ...]:
    """``"all"`` → (0, 1, 2); ``"none"``/``""`` → (); ``"0,2"`` → (0, 2) (an argparse ``type``)."""
    text = text.strip().lower()
    if text in ("all", "xyz", "zyx"):
        return (0, 1, 2)
    if text in ("", "none", "off"):
        return ()
    try:
        axes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        problem = f"--tta: expected 'all', 'none' or axes like 0,1,2, got {text!r}"
        raise argparse.ArgumentTypeError(problem) from None
    if any(a not in (0, 1, 2) for a in axes):
        raise argparse.ArgumentTypeError(f"--tta: axes must be 0, 1 or 2, got {text!r}")
    return axes


@dataclass(frozen=True)
class SlidingWindowSettings:
    """How the sliding window runs; validated on creation (:class:`SettingsError` names the bad field).

    ``device``: ``auto``/``cuda``/``cuda:N``/``mps``/``cpu``; ``precision``: ``auto``/``fp32``/``bf16``/
    ``fp16``; ``output_dtype``: what a new output holds (float16/float32 probability or uint8 0–255);
    ``skip_air``: do not run the network on all-zero tiles (their probability is 0 anyway).
    """

    step: float = 0.5
    gaussian: bool = True
    tta_axes: tuple[int, ...] = ()
    batch_size: int = 2
    device: str = "auto"
    precision: str = "auto"
    output_dtype: str = "float16"
    skip_air: bool = True

    def __post_init__(self) -> None:
        def put(name: str, value: Any) -> None:
            object.__setattr__(self, name, value)

        try:
            step = float(self.step)
        except (TypeError, ValueError):
            raise SettingsError(f"step must be a number in (0, 1], got {self.step!r}") from None
        if not 0 < step <= 1:
            raise SettingsError(f"step must be in (0, 1], got {self.step}")
        put("step", step)
        try:
            axes = tuple(sorted({int(a) for a in self.tta_axes}))
        except (TypeError, ValueError):
            raise SettingsError(f"tta_axes must be a subset of (0, 1, 2), got {self.tta_axes!r}") from None
        if any(a not in (0, 1, 2) for a in axes):
            raise SettingsError(f"tta_axes must be a subset of (0, 1, 2), got {tuple(self.tta_axes)}")
        put("tta_axes", axes)
        whole = isinstance(self.batch_size, int | float) and not isinstance(self.batch_size, bool)
        if not whole or int(self.batch_size) != self.batch_size or self.batch_size < 1:
            raise SettingsError(f"batch_size must be a whole number ≥ 1, got {self.batch_size!r}")
        put("batch_size", int(self.batch_size))
        device = str(self.device).strip().lower()
        base, _, index = device.partition(":")
        if base not in DEVICES or (index and (base != "cuda" or not index.isdigit())):
            raise SettingsError(f"unknown device {self.device!r}; choose one of {DEVICES} (or cuda:N)")
        put("device", device)
        precision = str(self.precision).strip().lower()
        if precision not in PRECISIONS:
            raise SettingsError(f"unknown precision {self.precision!r}; choose one of {PRECISIONS}")
        put("precision", precision)
        if str(self.output_dtype) not in OUTPUT_DTYPES:
            raise SettingsError(f"output_dtype must be one of {OUTPUT_DTYPES}, got {self.output_dtype!r}")
        put("output_dtype", str(self.output_dtype))
        put("gaussian", bool(self.gaussian))
        put("skip_air", bool(self.skip_air))

    # ------------------------------------------------------------------------------ conversions
    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (``tta_axes`` as a list)."""
        data = asdict(self)
        data["tta_axes"] = list(self.tta_axes)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SlidingWindowSettings:
        """Inverse of :meth:`to_dict`; unknown keys (e.g. ``models`` in stored metadata) are ignored."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def replace(self, **changes: Any) -> SlidingWindowSettings:
        """A copy with ``changes`` applied (validated again)."""
        return replace(self, **changes)

    @classmethod
    def build(cls, settings: SlidingWindowSettings | None = None, **overrides: Any) -> SlidingWindowSettings:
        """``settings`` (default: the defaults) with keyword ``overrides``; a bad keyword is a TypeError."""
        base = settings if settings is not None else cls()
        if not isinstance(base, cls):
            raise TypeError(f"expected SlidingWindowSettings, got {type(base).__name__}")
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise TypeError(f"unknown sliding-window setting(s): {', '.join(unknown)}")
        return base.replace(**overrides) if overrides else base


# ------------------------------------------------------------------------------------------ CLI
def add_settings_arguments(
    parser: argparse.ArgumentParser, *, output_dtype: bool = False, skip_air: bool = True
) -> None:
    """Add the sliding-window options (``--step … --precision``) to ``parser``.

    ``output_dtype``: also ``--dtype`` (default None: the caller's default); ``skip_air``: also
    ``--no-skip-air``.
    """
    group = parser.add_argument_group("sliding window")
    group.add_argument("--step", type=float, default=0.5, help="tile step as a fraction of the patch (0.5)")
    group.add_argument("--no-gaussian", action="store_true", help="blend tiles with equal weights")
    group.add_argument(
        "--tta",
        type=parse_tta,
        default=(),
        metavar="AXES",
        help="mirroring TTA axes: 'all', 'none' (default) or e.g. '0,1,2'",
    )
    group.add_argument("--batch-size", type=int, default=2, help="tiles per forward pass (2)")
    group.add_argument("--device", choices=DEVICES, default="auto")
    group.add_argument("--precision", choices=PRECISIONS, default="auto")
    if output_dtype:
        group.add_argument(
            "--dtype",
            choices=OUTPUT_DTYPES,
            default=None,
            help="output values: float16 (default)/float32 probability or uint8 0-255 "
            "(block-wise runs: uint8 only)",
        )
    if skip_air:
        group.add_argument("--no-skip-air", action="store_true", help="run the network on all-zero tiles too")


def settings_from_args(args: argparse.Namespace, **overrides: Any) -> SlidingWindowSettings:
    """The :class:`SlidingWindowSettings` of options added by :func:`add_settings_arguments`.

    A bad value (e.g. ``--step 0``) raises :class:`SettingsError` naming the problem.
    """
    values: dict[str, Any] = {
        "step": args.step,
        "gaussian": not args.no_gaussian,
        "tta_axes": tuple(args.tta),
        "batch_size": args.batch_size,
        "device": args.device,
        "precision": args.precision,
        "skip_air": not getattr(args, "no_skip_air", False),
    }
    if getattr(args, "dtype", None) is not None:
        values["output_dtype"] = args.dtype
    values.update(overrides)
    return SlidingWindowSettings(**values)


def describe_members(members: Iterable[Any]) -> list[dict[str, Any]]:
    """Name, weight and patch size of each ``WeightedModel`` (stored next to the settings)."""
    return [
        {"name": m.model.name, "weight": m.weight, "patch_size": list(m.model.patch_size)} for m in members
    ]
