"""Retrain panel of the Proofread dock: fine-tune on the corrected volumes, predict again, compare fairly.

Every saved version joins the list of corrected volumes of this napari session. *Retrain* saves
unsaved corrections first; a volume trains whole (image file + the saved version) when it was edited
whole, or when it is small enough and had an original label file (the version is labelled outside
the crop too); otherwise the crop is written to ``<run>/corrected/`` and trained on. It then builds
the fine-tuning settings (:func:`~napari_vesuvius.core.proofread.finetune.finetune_config`: init =
the model to fine-tune, a fine-tuning learning rate, corrected volumes always trained on) and starts the
``train`` CLI as its own process, followed by the shared
:class:`~napari_vesuvius.widgets._training_follower.TrainingFollower` (the Train dock's): napari stays
responsive, epochs count from 1, "validating…" shows during validation, Cancel is graceful (a second
press kills), and the end is announced in a napari notification.

**Which model.** By default the model that made the prediction being proofread
(``layer.metadata["models"]``, written by the Predict step and copied onto masks and accepted labels;
an ensemble fine-tunes its highest-weighted member); the line under the model field says which and why.
A model chosen in the field in this session wins; after a fine-tuning the next round starts from the
new checkpoint. The field is never restored from an earlier napari session, and when no model is known
the panel asks for one instead of guessing.

**Comparison.** When training finishes, the region is predicted with the new checkpoint (background job)
into a ``… fine-tuned`` layer next to the old prediction, and both models are scored on labelled volumes
the fine-tuning never trained on (:mod:`~napari_vesuvius.core.proofread.compare`) with the real labels,
post-processed alike. Without such volumes the panel says that no fair comparison is possible and names
no winner (scores against the corrected labels would favour the old model by construction).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    ProgressBar,
    PushButton,
    SpinBox,
    Table,
)

from napari_vesuvius.core.proofread.finetune import CorrectedVolume
from napari_vesuvius.core.proofread.region import format_box
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._layers import layer_array, models_of
from napari_vesuvius.widgets._proofread_layers import layer_path, run_while_visible
from napari_vesuvius.widgets._retrain_compare import SCORE_COLUMNS, RetrainComparison
from napari_vesuvius.widgets._sections import Section, compact, primary_button, row, status_label
from napari_vesuvius.widgets._settings import WidgetSettings
from napari_vesuvius.widgets._training_follower import FollowsTraining, TrainingFollower

#: the settings restored in a new napari session; never the model (it follows the prediction)
SETTING_NAMES = [
    "data_folder", "runs_folder", "epochs", "iterations", "batch_size", "patch", "device", "threads",
]  # fmt: skip


class RetrainPanel(FollowsTraining, RetrainComparison, Container):
    """Model line, epochs, Retrain / Cancel, progress and status; details and the comparison in sections."""

    def __init__(self, owner: Any, persist: bool | None = None) -> None:
        self.owner = owner
        self.model = FileEdit(
            label="model",
            mode="r",
            tooltip="checkpoint to fine-tune (default: the model behind the prediction)",
        )
        self.model_note = status_label("")
        self.data_folder = FileEdit(label="+ training data", mode="d", tooltip="optional training folder")
        self.runs_folder = FileEdit(
            label="runs folder", mode="d", tooltip="empty: the runs folder preference, else proofread_runs/"
        )
        self.epochs = SpinBox(label="epochs", min=1, max=100_000, value=5)
        self.iterations = SpinBox(label="iterations / epoch", min=1, max=1_000_000, value=50)
        self.batch_size = SpinBox(label="batch size", min=1, max=256, value=2)
        self.patch = SpinBox(label="patch edge", min=0, max=1024, step=16, value=0, tooltip="0 = the model's")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.threads = SpinBox(label="CPU threads", min=0, max=512, value=0, tooltip="0 = torch's choice")
        self.corrected_label = status_label("corrected volumes: none saved yet")
        self.retrain_button = primary_button("Retrain on corrected volumes")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, label="training")
        self.status = status_label("")
        self.scores = Table(value={"data": [], "index": [], "columns": list(SCORE_COLUMNS)})
        self.scores.native.setMaximumHeight(90)
        self.scores_note = status_label("")
        self.side_by_side = CheckBox(text="old and new side by side")
        self.task = TaskRunner(name="retrain_task")
        self.details = Section(
            "Fine-tuning details",
            [self.data_folder, self.runs_folder, self.iterations, self.batch_size, self.patch, self.device,
             self.threads],
        )  # fmt: skip
        self.comparison_section = Section(
            "Old vs fine-tuned", [self.scores, self.scores_note, self.side_by_side], labels=False
        )
        super().__init__(
            widgets=[
                self.model, self.model_note, self.epochs, self.corrected_label,
                row(self.retrain_button, self.cancel_button), self.progress_bar, self.status, self.task,
                self.comparison_section, self.details,
            ],
            label="",
        )  # fmt: skip
        compact(self)
        self.task.visible = False
        self.corrected: dict[tuple[str, str], CorrectedVolume] = {}
        self.run_dir: Path | None = None
        self.new_layer: Any = None
        self.comparison: Any = None
        self._config: Any = None  # the TrainConfig of the run followed
        self._auto_model = ""  # the field value the panel filled in (from the prediction's metadata)
        self._chained = ""  # the checkpoint of this session's last fine-tuning (the next round's start)
        self._visibility: dict[Any, bool] | None = None
        self.follower = TrainingFollower(
            self.native, progress=self.progress_bar, status=self.status, on_end=self._on_end,
            on_state=self._set_buttons,
        )  # fmt: skip
        self.settings = WidgetSettings("proofread_retrain", enabled=persist)
        self.settings.bind(self, SETTING_NAMES)
        self.retrain_button.changed.connect(self.retrain)
        self.cancel_button.changed.connect(self.cancel)
        self.side_by_side.changed.connect(self.set_side_by_side)
        self.model.changed.connect(self.refresh_model)
        self._follow_prediction()
        self.refresh_model()

    def primary_controls(self) -> list[Any]:
        """The controls of a retrain (the Proofread step lists them among its own)."""
        return [self.model, self.model_note, self.epochs, self.retrain_button, self.cancel_button,
                self.progress_bar, self.status]  # fmt: skip

    # -- which model -------------------------------------------------------------------------------
    def _follow_prediction(self) -> None:
        """Refresh the model line when the prediction (or the layers) change."""
        prediction = getattr(self.owner, "prediction", None)
        if prediction is not None and hasattr(prediction, "changed"):
            prediction.changed.connect(self.refresh_model)
        viewer = getattr(self.owner, "viewer", None)
        events = getattr(getattr(viewer, "layers", None), "events", None)
        if events is None:
            return
        events.inserted.connect(self.refresh_model)
        events.removed.connect(self.refresh_model)

        def disconnect(*_: Any) -> None:  # the viewer outlives a closed dock
            for event in (events.inserted, events.removed):
                event.disconnect(self.refresh_model)

        self.native.destroyed.connect(disconnect)

    def prediction_layer(self) -> Any:
        """The prediction being proofread: the session's, else the one chosen in the dock."""
        owner = self.owner
        prediction = getattr(owner, "session_prediction", None)
        if getattr(owner, "session", None) is not None and prediction is not None:
            return prediction
        return getattr(getattr(owner, "prediction", None), "value", None)

    def model_choice(self) -> tuple[Path | None, str]:
        """``(model to fine-tune, a line saying which and why)``; None with a request to choose one."""
        from napari_vesuvius.core.proofread.finetune import model_to_finetune

        chosen = self._path(self.model)
        if chosen is not None and str(chosen) != self._auto_model:  # this session's choice wins
            if not chosen.exists():
                return None, f"{chosen}: model not found: choose the model to fine-tune"
            why = "fine-tuned in this session" if str(chosen) == self._chained else "chosen here"
            return chosen, f"fine-tunes {chosen.name} ({why}; empty the field for the prediction's model)"
        layer = self.prediction_layer()
        if layer is None:
            return None, "choose a prediction above, or the model to fine-tune"
        return model_to_finetune(models_of(layer), layer.name)

    def refresh_model(self, *_: Any) -> Path | None:
        """Fill the model field from the prediction (unless chosen here) and say which model it is."""
        model, why = self.model_choice()
        current = self._path(self.model)
        if current is None or str(current) == self._auto_model:
            self._auto_model = "" if model is None else str(model)
            if str(current or "") != self._auto_model:
                with self.model.changed.blocked():
                    if model is None:
                        self.model.line_edit.value = ""  # FileEdit.value = "" would mean the cwd
                    else:
                        self.model.value = model
        self.model_note.value = why
        return model

    def model_path(self) -> Path | None:
        """The model the next Retrain fine-tunes (see :meth:`model_choice`)."""
        return self.model_choice()[0]

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

    def _runs_folder(self, anchor: Path) -> Path:
        """The runs folder field, else the *runs folder* preference, else ``proofread_runs/`` there."""
        from napari_vesuvius.widgets._preferences import preference

        chosen = self._path(self.runs_folder)
        if chosen is not None:
            return chosen
        preferred = str(preference("runs_folder") or "").strip()
        return Path(preferred).expanduser() if preferred else anchor.parent / "proofread_runs"

    def retrain(self) -> None:
        """Save pending corrections, then prepare and start the fine-tuning process."""
        owner = self.owner
        if self.running or self.task.running or owner.task.running:
            self.say("busy: wait for the running job or training")
            return
        model = self.refresh_model()
        if model is None:
            self.say(self.model_note.value)
            return
        session = owner.session
        if session is None and not self.corrected:
            self.say("accept, correct and save a volume first")
            return
        anchor = session.target if session is not None else next(iter(self.corrected.values())).labels_path
        run_dir = self._runs_folder(anchor) / f"finetune-{time.strftime('%Y%m%d-%H%M%S')}"
        if session is not None and (owner.dirty or self.key(session) not in self.corrected):
            self.say("saving the corrections first")
            owner.save(on_saved=lambda _: self._prepare(model, run_dir))
            return
        self._prepare(model, run_dir)

    def _prepare(self, model: Path, run_dir: Path) -> Any:
        """Background job: write the crops to train on and build the settings; then start training."""
        from napari_vesuvius.core.proofread.finetune import iter_prepare_finetune

        entries = list(self.corrected.values())
        data = [str(p) for p in [self._path(self.data_folder)] if p is not None]
        settings = {
            "epochs": int(self.epochs.value), "iterations_per_epoch": int(self.iterations.value),
            "batch_size": int(self.batch_size.value), "device": self.device.value,
            "patch_size": (int(self.patch.value),) * 3 if self.patch.value else None,
            "torch_threads": int(self.threads.value),
        }  # fmt: skip
        return run_while_visible(
            self.task,
            lambda: iter_prepare_finetune(model, entries, run_dir, data=data, **settings),
            description="prepare fine-tuning",
            on_result=lambda config: self._launch(config, run_dir),
        )

    def _launch(self, config: Any, run_dir: Path) -> None:
        from napari_vesuvius.core.errors import VesuviusError

        try:
            self.follower.start(config, run_dir)
        except (OSError, VesuviusError) as error:
            self.say(f"could not start fine-tuning: {error}")
            return
        self.run_dir, self._config = run_dir, config
        self.model_note.value = f"fine-tuning {Path(config.init).name} on {len(config.pairs)} volume(s)"

    def poll(self) -> None:
        """Read the run's new metrics now (the follower's timer does this every 500 ms)."""
        self.follower.poll()

    def _on_end(self, outcome: str, process: Any) -> None:
        from napari_vesuvius.core.proofread.finetune import best_checkpoint

        if outcome == "finished":
            checkpoint = best_checkpoint(self.run_dir) if self.run_dir is not None else None
            if checkpoint is not None:
                self.say(f"fine-tuned: {checkpoint}; predicting and comparing with it")
                self.follower.announce(
                    f"Fine-tuning finished: {checkpoint.name}; comparing old and new", outcome
                )
                self.predict(checkpoint)
                return
            outcome = "error"
        if outcome == "cancelled":
            text = f"cancelled; continue with: napari-vesuvius train --run-dir {self.run_dir} --resume"
        elif outcome in ("killed", "stopped"):
            text = (
                f"fine-tuning {outcome}; resume it: napari-vesuvius train --run-dir {self.run_dir} --resume"
            )
        else:
            tail = process.log_tail(1500).strip().splitlines()
            text = f"fine-tuning failed (exit code {process.poll()}): {tail[-1] if tail else 'see train.log'}"
        self.say(text)
        self.follower.announce(text, outcome)

    def cancel(self) -> None:
        """Graceful stop (a checkpoint is saved); pressing again while cancelling kills at once."""
        if self.task.running:
            self.task.cancel()
        self.follower.cancel()

    def _set_buttons(self) -> None:
        self.retrain_button.enabled = not self.running
        self.cancel_button.enabled = self.running
        self.cancel_button.text = "Kill now" if self.cancelling and self.running else "Cancel"

    def say(self, text: str) -> None:
        self.status.value = text
