"""The out-of-distribution intensity check of ``predict`` and ``submit`` (one place for both): compare
each volume with every model's training intensities before predicting and print one ``warning:``
block on stderr when it is clearly outside them (see ``core/inference/ood.py``). Never fails a run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any


def add_intensity_check_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-intensity-check",
        dest="intensity_check",
        action="store_false",
        help="skip the check that warns when a volume's intensities are clearly unlike the model's "
        "training data",
    )


def references(paths: Sequence[Any]) -> list[Any]:
    """The models' normalisation and training profile, read without loading the networks."""
    from napari_vesuvius.core.inference.ood import intensity_reference

    found = [intensity_reference(path) for path in paths]
    return [ref for ref in found if ref is not None]


def warn_intensity(
    args: argparse.Namespace, models: Sequence[Any], volume: Any, name: str, *, remote: Any = None
) -> list[Any]:
    """Check ``volume`` (array, LazyVolume, path or URL) against every model; print a warning per shift.

    ``models``: InferenceModels, WeightedModels or :func:`references`. Returns the shifts found. Any
    failure (an unreadable volume: predicting reports it) skips the check silently.
    """
    if not getattr(args, "intensity_check", True) or not models:
        return []
    from napari_vesuvius.core.inference.ood import check_intensity

    shifts = []
    try:
        opened = None
        if not hasattr(volume, "shape"):
            import warnings

            from napari_vesuvius.core.volume.io import open_volume

            with warnings.catch_warnings():  # what opening says is said again when predicting
                warnings.simplefilter("ignore")
                opened = volume = open_volume(volume, remote=remote)
        try:
            for member in models:
                model = getattr(member, "model", member)
                shift = check_intensity(model, volume, name=name)
                if shift is None:
                    continue
                shifts.append(shift)
                which = f" (model {model.name})" if len(models) > 1 and getattr(model, "name", "") else ""
                print(f"warning: {shift.message}{which}\n  what to do: {shift.remedy}", file=sys.stderr)
        finally:
            if opened is not None:
                opened.close()
    except Exception:  # the check is advice; predicting reports a bad volume itself
        return shifts
    return shifts
