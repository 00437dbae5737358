"""Retrain panel of the Proofread dock: fine-tune on the corrected volumes, predict again, compare.

Every saved version joins the list of corrected volumes of this napari session. *Retrain* saves
unsaved corrections first; a volume trains whole (image file + the saved version) when it was edited
whole, or when it is small enough and had an original label file (the version is labelled outside
the crop too); otherwise the crop is written to ``<run>/corrected/`` and trained on. It then builds
the fine-tuning settings (:func:`~napari_vesuvius.core.proofread.finetune.finetune_config`: init =
the current model, a fine-tuning learning rate, corrected volumes always trained on) and starts the
``train`` CLI as its own process (:class:`~napari_vesuvius.core.training.process.TrainingProcess`),
followed through its ``metrics.jsonl``: napari stays responsive, Cancel is graceful (a second press
kills). When it finishes, the region is predicted with the new checkpoint (background job) into a
``… fine-tuned`` layer next to the old prediction, both are post-processed with the same settings
and scored against the corrected labels, and the next retrain starts from the new checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    Label,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
)

from napari_vesuvius.core.labels import SURFACE
from napari_vesuvius.core.progress import Progress
from napari_vesuvius.core.proofread.region import Box, format_box, read_crop
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._layers import layer_array, set_image_layer
from napari_vesuvius.widgets._proofread_layers import (
    find_dock_widget,
    layer_path,
    run_while_visible,
    viewer_grid,
    wrap_text,
)
from napari_vesuvius.widgets._settings import WidgetSettings

#: how often the run's metrics log and process are checked (ms)
POLL_INTERVAL_MS = 500
SCORE_COLUMNS = ("score", "topo", "surface_dice", "voi_score")
SETTING_NAMES = [
    "model", "data_folder", "runs_folder", "epochs", "iterations", "batch_size", "patch", "device", "threads",
]  # fmt: skip


@dataclass
class CorrectedVolume:
    """A saved correction: the version file, the region it covers and the image it belongs to."""

    name: str
    image: Any
    image_path: Path | None
    labels_path: Path
    box: Box
    whole: bool
    #: the family has an original label file, so the saved version is labelled outside the crop too
    has_original: bool

    def trains_whole(self) -> bool:
        """Train on the image file and the whole version (else on the crop, written for the run)."""
        from napari_vesuvius.core.proofread.accept import MAX_EDIT_VOXELS

        if self.image_path is None or not self.image_path.is_file():
            return False
        small = int(np.prod(self.image.shape)) <= MAX_EDIT_VOXELS
        return self.whole or (self.has_original and small)


class RetrainPanel(Container):
    """Fine-tune settings, Retrain / Cancel, progress, and the old-vs-new scores."""

    def __init__(self, owner: Any, persist: bool | None = None) -> None:
        from qtpy.QtCore import QTimer

        self.owner = owner
        self.model = FileEdit(label="model", mode="r", tooltip="checkpoint to fine-tune (empty: Inference's)")
        self.data_folder = FileEdit(label="+ training data", mode="d", tooltip="optional training folder")
        self.runs_folder = FileEdit(
            label="runs folder", mode="d", tooltip="empty: proofread_runs/ by the labels"
        )
        self.epochs = SpinBox(label="epochs", min=1, max=100_000, value=5)
        self.iterations = SpinBox(label="iterations / epoch", min=1, max=1_000_000, value=50)
        self.batch_size = SpinBox(label="batch size", min=1, max=256, value=2)
        self.patch = SpinBox(label="patch edge", min=0, max=1024, step=16, value=0, tooltip="0 = the model's")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.threads = SpinBox(label="CPU threads", min=0, max=512, value=0, tooltip="0 = torch's choice")
        self.corrected_label = Label(value="corrected volumes: none saved yet")
        self.retrain_button = PushButton(text="Retrain on corrected volumes")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, label="training")
        self.status = Label(value="")
        self.scores = Table(value={"data": [], "index": [], "columns": list(SCORE_COLUMNS)})
        self.scores_note = Label(value="")
        self.side_by_side = CheckBox(text="old and new side by side")
        self.task = TaskRunner(name="retrain_task")
        buttons = Container(
            widgets=[self.retrain_button, self.cancel_button], layout="horizontal", labels=False
        )
        super().__init__(
            widgets=[
                Label(value="<b>Retrain</b>"), self.model, self.data_folder, self.runs_folder, self.epochs,
                self.iterations, self.batch_size, self.patch, self.device, self.threads,
                self.corrected_label, buttons, self.progress_bar, self.status, self.task, self.scores,
                self.scores_note, self.side_by_side,
            ],
            label="",
        )  # fmt: skip
        self.task.visible = False
        wrap_text(self.status, self.corrected_label, self.scores_note)
        self.corrected: dict[tuple[str, str], CorrectedVolume] = {}
        self.process: Any = None
        self.watcher: Any = None
        self.run_dir: Path | None = None
        self.cancelling = False
        self.new_layer: Any = None
        self._visibility: dict[Any, bool] | None = None
        self.timer = QTimer(self.native)
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.poll)
        self.settings = WidgetSettings("proofread_retrain", enabled=persist)
        self.settings.bind(self, SETTING_NAMES)
        self.retrain_button.changed.connect(self.retrain)
        self.cancel_button.changed.connect(self.cancel)
        self.side_by_side.changed.connect(self.set_side_by_side)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    # -- corrected volumes -------------------------------------------------------------------------
    @staticmethod
    def key(session: Any) -> tuple[str, str]:
        return (str(session.target), format_box(session.box))

    def add_corrected(self, session: Any, version: Path, image_layer: Any) -> None:
        """Remember a saved version as training data (replacing older saves of the same region)."""
        from napari_vesuvius.widgets._train_run import safe_name

        suffix = "" if session.whole else "_" + format_box(session.box).replace(":", "-").replace(",", "_")
        self.corrected[self.key(session)] = CorrectedVolume(
            name=safe_name(f"{image_layer.name}{suffix}"), image=layer_array(image_layer),
            image_path=layer_path(image_layer), labels_path=version, box=session.box, whole=session.whole,
            has_original=session.target.exists(),
        )  # fmt: skip
        names = ", ".join(f"{entry.labels_path.name}" for entry in self.corrected.values())
        self.corrected_label.value = f"corrected volumes: {len(self.corrected)} ({names})"

    # -- retrain -----------------------------------------------------------------------------------
    def _path(self, widget: FileEdit) -> Path | None:
        text = str(widget.value or "").strip()
        return None if text in ("", ".") else Path(text)

    def model_path(self) -> Path | None:
        """The model field, else the Inference widget's model."""
        from napari_vesuvius.widgets.inference_widget import InferenceWidget

        path = self._path(self.model)
        if path is None:
            inference = find_dock_widget(self.owner.viewer, InferenceWidget)
            path = None if inference is None else self._path(inference.models.model)
        return path if path is not None and path.exists() else None

    def retrain(self) -> None:
        """Save pending corrections, then prepare and start the fine-tuning process."""
        owner = self.owner
        if self.running or self.task.running or owner.task.running:
            self.say("busy: wait for the running job or training")
            return
        model = self.model_path()
        if model is None:
            self.say("choose the model (checkpoint) to fine-tune")
            return
        session = owner.session
        if session is None and not self.corrected:
            self.say("accept, correct and save a volume first")
            return
        anchor = session.target if session is not None else next(iter(self.corrected.values())).labels_path
        runs = self._path(self.runs_folder) or anchor.parent / "proofread_runs"
        run_dir = runs / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
        if session is not None and (owner.dirty or self.key(session) not in self.corrected):
            self.say("saving the corrections first")
            owner.save(on_saved=lambda _: self._prepare(model, run_dir))
            return
        self._prepare(model, run_dir)

    def _prepare(self, model: Path, run_dir: Path) -> Any:
        """Background job: write the crops to train on and build the settings; then start training."""
        from napari_vesuvius.core.proofread.finetune import (
            CORRECTED_DIR,
            finetune_config,
            iter_write_training_pair,
        )
        from napari_vesuvius.core.volume.io import open_labels

        entries = list(self.corrected.values())
        data = [str(p) for p in [self._path(self.data_folder)] if p is not None]
        settings = {
            "epochs": int(self.epochs.value), "iterations_per_epoch": int(self.iterations.value),
            "batch_size": int(self.batch_size.value), "device": self.device.value,
            "patch_size": (int(self.patch.value),) * 3 if self.patch.value else None,
            "torch_threads": int(self.threads.value),
        }  # fmt: skip

        def job() -> Generator[Progress, None, Any]:
            pairs = []
            for index, entry in enumerate(entries):
                yield Progress(index, len(entries) + 1, f"preparing {entry.name}")
                if entry.trains_whole():
                    pairs.append((entry.image_path, entry.labels_path))
                    continue
                with open_labels(entry.labels_path) as volume:
                    labels = read_crop(volume.data, entry.box)
                folder = run_dir / CORRECTED_DIR
                written = yield from iter_write_training_pair(
                    entry.image, labels, folder, entry.name, entry.box
                )
                pairs.append(written)
            yield Progress(len(entries), len(entries) + 1, "fine-tuning settings")
            return finetune_config(model, pairs, data=data, **settings)

        return run_while_visible(
            self.task,
            job,
            description="prepare fine-tuning",
            on_result=lambda config: self._launch(config, run_dir),
        )

    def _launch(self, config: Any, run_dir: Path) -> None:
        from napari_vesuvius.core.errors import VesuviusError
        from napari_vesuvius.core.training.monitor import RunWatcher
        from napari_vesuvius.core.training.process import TrainingProcess

        try:
            self.process = TrainingProcess.start(config, run_dir)
        except (OSError, VesuviusError) as error:
            self.say(f"could not start fine-tuning: {error}")
            return
        self.run_dir, self.watcher, self.cancelling = run_dir, RunWatcher(run_dir), False
        self.progress_bar.value = 0
        self.say(f"fine-tuning {Path(config.init).name} on {len(config.pairs)} volume(s) in {run_dir}")
        self.timer.start()
        self._set_buttons()

    def poll(self) -> None:
        """Timer tick: follow metrics.jsonl; when the process exits, predict with the new model."""
        if self.watcher is not None and self.watcher.poll():
            summary = self.watcher.summary
            self.progress_bar.value = int(1000 * summary.fraction)
            if summary.state == "running" and not self.cancelling:
                done = f"iteration {summary.iteration}/{summary.iterations}"
                self.status.value = f"epoch {summary.epoch}/{summary.epochs} · {done}"
        if self.process is not None and not self.process.running:
            if self.watcher is not None:
                self.watcher.poll()
            self._finished()

    def _finished(self) -> None:
        from napari_vesuvius.core.proofread.finetune import best_checkpoint

        process, self.process = self.process, None
        self.timer.stop()
        self._set_buttons()
        state = self.watcher.summary.state if self.watcher is not None else "error"
        if state == "finished":
            checkpoint = best_checkpoint(self.run_dir)
            if checkpoint is not None:
                self.say(f"fine-tuned: {checkpoint}; predicting with it")
                self.predict(checkpoint)
                return
        if state == "cancelled":
            self.say(f"cancelled; continue with: napari-vesuvius train --run-dir {self.run_dir} --resume")
            return
        tail = process.log_tail(1500).strip().splitlines()
        self.say(f"fine-tuning failed (exit code {process.poll()}): {tail[-1] if tail else 'see train.log'}")

    def cancel(self) -> None:
        """Graceful stop (a checkpoint is saved); pressing again while cancelling kills at once."""
        if self.task.running:
            self.task.cancel()
        if not self.running:
            return
        if self.cancelling:
            self.process.kill()
            return
        self.process.cancel()
        self.cancelling = True
        self.status.value = "cancelling… (finishing the iteration)"
        self._set_buttons()

    def _set_buttons(self) -> None:
        self.retrain_button.enabled = not self.running
        self.cancel_button.enabled = self.running
        self.cancel_button.text = "Kill now" if self.cancelling and self.running else "Cancel"

    # -- predict and compare -----------------------------------------------------------------------
    def predict(self, checkpoint: Path) -> Any:
        """Predict the session's region with ``checkpoint``; score old and new against the corrections."""
        from napari_vesuvius.core.proofread.finetune import iter_compare, iter_predict_region

        owner = self.owner
        session, image_layer = owner.session, owner.session_image
        if session is None or image_layer is None:
            self.say(f"fine-tuned model: {checkpoint} (no region open to compare on)")
            return None
        image, box, device = layer_array(image_layer), session.box, self.device.value
        labels = np.array(owner.current_labels(), copy=True)
        config, source = owner.postprocess_config()
        if session.probability is not None:
            old = (session.probability, True)
        else:  # accepted from a mask: the model's mask is the baseline's surface
            old = (session.baseline == SURFACE, False)

        def job() -> Generator[Progress, None, Any]:
            prob = yield from iter_predict_region(checkpoint, image, box, device=device)
            scan = read_crop(image, box) > 0 if config.gate_to_scan else None
            scores = yield from iter_compare({"old": old, "new": (prob, True)}, labels, config, scan)
            return prob, scores

        def done(result: tuple[np.ndarray, dict[str, Any]]) -> None:
            self.show_result(*result, checkpoint=checkpoint, source=source)

        return run_while_visible(
            self.task, job, description="predict with the fine-tuned model", on_result=done
        )

    def show_result(self, prob: np.ndarray, scores: dict[str, Any], *, checkpoint: Path, source: str) -> None:
        owner, viewer = self.owner, self.owner.viewer
        image_layer, old_layer = owner.session_image, owner.session_prediction
        scale = np.asarray(image_layer.scale)
        translate = np.asarray(image_layer.translate) + np.asarray(owner.session.origin) * scale
        base = old_layer.name if old_layer is not None else image_layer.name
        layer = set_image_layer(
            viewer, f"{base} fine-tuned", prob, colormap="magma", contrast_limits=(0.0, 1.0),
            blending="additive", scale=scale, translate=translate,
        )  # fmt: skip
        layer.metadata["fine_tuned"] = {"checkpoint": str(checkpoint), "run_dir": str(self.run_dir)}
        if old_layer is not None and old_layer in viewer.layers:
            viewer.layers.move(viewer.layers.index(layer), viewer.layers.index(old_layer) + 1)
        self.new_layer = layer
        rows = [[round(float(getattr(scores[k], c)), 4) for c in SCORE_COLUMNS] for k in ("old", "new")]
        self.scores.value = {
            "data": rows,
            "index": ["old model", "fine-tuned"],
            "columns": list(SCORE_COLUMNS),
        }
        self.scores_note.value = (
            f"against the corrected labels the model was tuned on (a fit, not a held-out estimate); "
            f"post-processed with {source}"
        )
        self.model.value = checkpoint  # the next round starts from the fine-tuned model
        self.say(f"old {scores['old'].score:.4f} → fine-tuned {scores['new'].score:.4f}")
        if self.side_by_side.value:
            self.set_side_by_side(True)

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

    def say(self, text: str) -> None:
        self.status.value = text
