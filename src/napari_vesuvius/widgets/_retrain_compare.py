"""The comparison half of Proofread's Retrain panel: predict the region with the fine-tuned model, score
old vs new fairly, show the result (a mixin of :class:`~._proofread_retrain.RetrainPanel`).

Both models are scored on labelled volumes the fine-tuning never trained on
(:mod:`napari_vesuvius.core.proofread.compare`), in the panel's background task; without such volumes
the panel says that no fair comparison is possible and shows no winner.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path
from typing import Any

import numpy as np

from napari_vesuvius.core.progress import Progress
from napari_vesuvius.widgets._layers import MODELS, layer_array, placement, probability_style, set_image_layer
from napari_vesuvius.widgets._proofread_layers import run_while_visible, viewer_grid

SCORE_COLUMNS = ("score", "topo", "surface_dice", "voi_score")


class RetrainComparison:
    """Predict with the fine-tuned checkpoint and compare; expects the RetrainPanel's attributes."""

    owner: Any
    task: Any
    device: Any
    scores: Any
    scores_note: Any
    comparison_section: Any
    side_by_side: Any
    model: Any
    follower: Any
    run_dir: Path | None
    new_layer: Any
    comparison: Any
    _config: Any
    _chained: str
    _visibility: dict[Any, bool] | None
    data_folder: Any
    say: Callable[[str], None]
    _path: Callable[[Any], Path | None]

    def predict(self, checkpoint: Path) -> Any:
        """Predict the session's region with ``checkpoint``, and score old vs new on held-out volumes."""
        from napari_vesuvius.core.proofread.compare import held_out_volumes, iter_fair_compare
        from napari_vesuvius.core.proofread.finetune import iter_predict_region

        owner = self.owner
        session, image_layer = owner.session, owner.session_image
        config, source = owner.postprocess_config()
        device, run_config = self.device.value, self._config
        old_model = None if run_config is None or not run_config.init else Path(run_config.init)
        extra = [p for p in [self._path(self.data_folder)] if p is not None]
        region = None
        if session is not None and image_layer is not None:
            region = (layer_array(image_layer), session.box)

        def job() -> Generator[Progress, None, Any]:
            prob = None
            if region is not None:
                prob = yield from iter_predict_region(checkpoint, region[0], region[1], device=device)
            volumes = [] if run_config is None else held_out_volumes(run_config, extra)
            comparison = None
            if old_model is not None:
                comparison = yield from iter_fair_compare(
                    old_model, checkpoint, volumes, config, device=device
                )
            return prob, comparison

        def done(result: tuple[Any, Any]) -> None:
            self.show_result(*result, checkpoint=checkpoint, source=source)

        return run_while_visible(
            self.task, job, description="predict with the fine-tuned model", on_result=done
        )

    def show_result(self, prob: Any, comparison: Any, *, checkpoint: Path, source: str) -> None:
        """Show the fine-tuned prediction and the comparison; the next round starts from ``checkpoint``."""
        from napari_vesuvius.core.proofread.compare import NO_FAIR_COMPARISON

        if prob is not None:
            self._show_layer(prob, checkpoint)
        self.comparison = comparison
        if comparison is not None and comparison.fair:
            means = {which: comparison.mean(which) for which in ("old", "new")}
            rows = [[f"{float(means[k][c]):.4f}" for c in SCORE_COLUMNS] for k in ("old", "new")]
            note = f"{comparison.note}; post-processed with {source}"
            verdict = comparison.verdict()
        else:
            rows, note = [], NO_FAIR_COMPARISON if comparison is None else comparison.note
            verdict = note
        self.scores.value = {
            "data": rows,
            "index": ["old model", "fine-tuned"][: len(rows)],
            "columns": list(SCORE_COLUMNS),
        }
        self.scores_note.value = note
        self.comparison_section.expanded = True
        self._chained = str(checkpoint)
        self.model.value = (
            checkpoint  # the next round starts from the fine-tuned model (said below the field)
        )
        self.say(verdict)
        self.follower.announce(f"Fine-tuned {checkpoint.name}: {verdict}", "finished")
        if self.side_by_side.value:
            self.set_side_by_side(True)

    def _show_layer(self, prob: np.ndarray, checkpoint: Path) -> None:
        owner, viewer = self.owner, self.owner.viewer
        image_layer, old_layer = owner.session_image, owner.session_prediction
        base = old_layer.name if old_layer is not None else image_layer.name
        layer = set_image_layer(
            viewer,
            f"{base} fine-tuned",
            prob,
            **placement(image_layer, owner.session.origin),
            **probability_style(prob.dtype),
        )
        layer.metadata["fine_tuned"] = {"checkpoint": str(checkpoint), "run_dir": str(self.run_dir)}
        layer.metadata[MODELS] = [{"path": str(checkpoint), "weight": 1.0, "folds": None, "checkpoint": None}]
        if old_layer is not None and old_layer in viewer.layers:
            viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(old_layer) + 1)
        self.new_layer = layer

    def set_side_by_side(self, on: bool) -> None:
        """Show only the old and new predictions, each in its own grid cell (off: restore the view)."""
        viewer = self.owner.viewer
        old, new = self.owner.session_prediction, self.new_layer
        if on and self._visibility is None:
            if old is None or new is None or new not in viewer.layers:
                self.say("retrain first: there is no fine-tuned prediction to compare")
                return
            self._visibility = {layer: layer.visible for layer in viewer.layers}
            for layer in viewer.layers:
                layer.visible = layer is old or layer is new
            viewer_grid(viewer).stride = 1
            viewer_grid(viewer).enabled = True
        elif not on and self._visibility is not None:
            viewer_grid(viewer).enabled = False
            for layer, visible in self._visibility.items():
                if layer in viewer.layers:
                    layer.visible = visible
            self._visibility = None
