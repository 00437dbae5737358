"""The Inference dock's block-wise run: a zarr-backed image → OME-Zarr on a dask cluster.

The image layer must come from a zarr / OME-Zarr opened by this plugin (its ``metadata["path"]``):
workers read the file themselves, never the layer. The output is an OME-Zarr pyramid at the chosen
zarr path, created (or reopened to resume) in the background; it is added as a multiscale layer as
soon as it exists and refreshed as blocks finish; it records the models that made it
(``_layers.MODELS``). Opening the output and, on cancel, shutting the cluster down happen in the job on
the worker thread (the job's ``finally``); the GUI callbacks only update the layer and the log. Cancel
stops submitting and leaves the output resumable: running again with the same settings finishes only
the missing blocks. Before the first block, the job compares a sample of the image with the models'
training intensities; the dock shows a ⚠ warning when it looks different (``_inference_ood.py``).
"""

from __future__ import annotations

import time
from collections.abc import Generator
from typing import TYPE_CHECKING, Any

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._inference_ood import checked
from napari_vesuvius.widgets._layers import MODELS, layer_array, placement, probability_style
from napari_vesuvius.widgets._preferences import zarr_format

if TYPE_CHECKING:
    from napari_vesuvius.core.inference.settings import SlidingWindowSettings

    from .inference_widget import InferenceWidget

#: refresh the filling multiscale layer at most this often (seconds)
REFRESH_INTERVAL_S = 1.0


def zarr_source(layer: Any) -> str | None:
    """The zarr / OME-Zarr path a layer was opened from, or None."""
    metadata = getattr(layer, "metadata", {}) or {}
    if metadata.get("kind") in ("zarr", "ome-zarr") and metadata.get("path"):
        return str(metadata["path"])
    return None


def open_levels(location: str, count: int) -> list[Any]:
    """The output's levels as zarr arrays (not dask: napari re-reads them on refresh)."""
    from napari_vesuvius.core.scroll.source import join, open_array

    return [open_array(join(location, str(level))) for level in range(count)]


def start_block_run(
    widget: InferenceWidget, image_layer: Any, specs: list[Any], settings: SlidingWindowSettings
) -> Any:
    """Start the block-wise run in the widget's TaskRunner; returns the worker or None (message set)."""
    source = zarr_source(image_layer)
    if source is None:
        widget.message.value = "block-wise runs need an image opened from a zarr / OME-Zarr file"
        return None
    target = str(widget.output_zarr.value or "").strip()
    if target in ("", ".") or not target.rstrip("/").lower().endswith(".zarr"):
        widget.message.value = "choose a .zarr output for the block-wise run"
        return None
    name = f"{image_layer.name} probability"
    scheduler = widget.scheduler.value.strip() or None
    workers = int(widget.workers.value) or None
    state: dict[str, Any] = {"layer": None, "refreshed": 0.0}
    output_format = zarr_format()  # the zarr_format preference (read on the GUI thread)
    volume = layer_array(image_layer)  # lazy (zarr-backed): the check reads a sample of it in the job

    def job() -> Generator[Progress, None, Any]:
        from napari_vesuvius.core.scroll import iter_run_scroll, prepare_scroll

        yield Progress(0, 1, "loading the model(s) and opening the output")
        plan = prepare_scroll(source, target, specs, settings, ome=True, zarr_format=output_format)
        location, count = plan.output.location, len(plan.layout.levels)
        state["output"] = (location, open_levels(location, count))  # opened here, not on the GUI thread
        yield Progress(0, 1, "checking the image's intensities against the model(s)")
        state["intensity"] = checked(plan.members, volume, image_layer.name)  # informs, never stops
        return (yield from iter_run_scroll(plan, scheduler=scheduler, workers=workers))

    def layer() -> Any:
        if state["layer"] is None and "output" in state:
            location, levels = state["output"]
            count = len(levels)
            for stale in (name, f"{name} (partial)"):
                if stale in widget.viewer.layers:
                    widget.viewer.layers.remove(stale)
            state["layer"] = widget.viewer.add_image(
                levels if count > 1 else levels[0],
                multiscale=count > 1,
                name=name,
                metadata={"path": location, "kind": "ome-zarr", MODELS: [spec.describe() for spec in specs]},
                **probability_style(levels[0].dtype),
                **placement(image_layer),
            )
        return state["layer"]

    def progress(report: Progress) -> None:
        widget.show_intensity(state.pop("intensity", None), image_layer)
        now = time.perf_counter()
        current = layer()
        if current is not None and now - state["refreshed"] > REFRESH_INTERVAL_S:
            state["refreshed"] = now
            current.refresh()

    def done(result: Any) -> None:
        widget.show_intensity(state.pop("intensity", None), image_layer)
        widget.last_result = result
        current = layer()
        if current is not None:
            current.refresh()
            current.metadata["prediction"] = {**result.settings, "complete": result.complete}
        widget._log(
            f"{image_layer.name}: {result.blocks_total} blocks ({result.blocks_before} done before, "
            f"{result.blocks_computed} computed, {result.blocks_air} air) in {result.elapsed_s:.1f}s, "
            f"{result.voxels_per_s / 1e6:.2f} Mvox/s → {result.output}"
        )

    def cancelled() -> None:
        current = layer()
        if current is not None:
            current.name = f"{name} (partial)"
        widget._log(f"{image_layer.name}: cancelled; run again with the same settings to resume")

    def failed(error: BaseException) -> None:
        widget._log(f"{image_layer.name}: failed: {error}")

    return widget.task.start(
        job,
        description="block-wise inference",
        on_progress=progress,
        on_result=done,
        on_cancelled=cancelled,
        on_error=failed,
    )
