"""Where the Inference dock's run predicts into, and the clean-up its models chose (both run in the job)."""

from __future__ import annotations

from typing import Any

import numpy as np

#: how to allow replacing an existing zarr output (in the refusal's message)
REPLACE_HINT = "tick 'replace an existing output' (Zarr output section) to replace it"


def make_output(
    target: str, shape: tuple[int, ...], dtype: str, inputs: list[Any], replace: bool, spatial: Any = None
) -> tuple[Any, Any]:
    """The array to predict into and its pending zarr output (None: in memory); runs in the job.

    A zarr path is checked and created by core (``create_prediction_output``): never a file a layer
    was opened from or a model, an existing store only when *replace* is ticked; the run fills a
    partial store next to it that replaces the target only when the run finishes. The store is in the
    zarr format of the ``zarr_format`` preference (``.ome.zarr``: OME-Zarr with a pyramid) and carries
    ``spatial``, the image layer's placement.
    """
    if not target:
        return np.zeros(shape, dtype=np.dtype(dtype)), None
    from napari_vesuvius.core.inference.outputs import create_prediction_output
    from napari_vesuvius.widgets._preferences import zarr_format

    pending = create_prediction_output(
        target, shape, np.dtype(dtype), inputs=inputs, overwrite=replace,
        hint=REPLACE_HINT,
        chunks=tuple(min(128, n) for n in shape),
        zarr_format=zarr_format(),
        spatial=spatial,
    )  # fmt: skip
    return pending.array, pending


def stored_clean_up(specs: list[Any]) -> dict[str, Any] | None:
    """The clean-up all the models chose in training (``PostprocessConfig.to_dict()``), or None.

    Read from the checkpoint files without building networks (imports torch: runs in the job), so the
    probability layer carries it and the Tune / Proofread docks can begin from it.
    """
    from napari_vesuvius.core.errors import VesuviusError
    from napari_vesuvius.core.postprocess.choice import checkpoint_choice, common_config

    try:
        config = common_config([checkpoint_choice(spec.path) for spec in specs])
    except VesuviusError:  # the job reports a bad model with its own message
        return None
    return None if config is None else config.to_dict()
