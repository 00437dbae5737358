"""Train dock widget: train or fine-tune a surface model in a separate process, with live curves.

Start runs ``napari-vesuvius train`` as its own process in the run folder (an empty run folder field:
a new folder in the *runs folder* preference); the dock follows it through the shared
:class:`~napari_vesuvius.widgets._training_follower.TrainingFollower` (the one Retrain uses too):
``metrics.jsonl`` read incrementally on a 500 ms ``QTimer`` (no blocking call on the GUI thread), a
progress bar and one status line (epoch from 1, recent rate, ETA, "validating…" while an epoch is
validated), and curves of training loss, validation loss, pseudo-Dice and leaderboard score per epoch.
Cancel is graceful (SIGTERM: the run finishes its iteration, saves a checkpoint and its state); pressing
it again while cancelling kills at once (the run resumes from its last epoch). Resume continues a run
folder with its stored settings. A run that ends says so in a napari notification too. "Use this model"
hands ``checkpoint_best.pt`` (else ``checkpoint_last.pt``) to the Inference step.

Layout: data, model, start-from and epochs, then Start / Cancel / Resume, progress and status; the
schedule, augmentation and run folder in collapsed sections; the curves (open) and the log (collapsed)
below.

Closing napari leaves a running training alone: the process runs in its own session, every file it
writes is atomic, and choosing the same run folder again (or reopening the widget, whose run folder
setting persists) re-attaches to it, so it can be followed and cancelled from the new session.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, ProgressBar, PushButton, TextEdit

from napari_vesuvius.core.errors import VesuviusError
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._layers import layer_array
from napari_vesuvius.widgets._sections import Section, compact, primary_button, row, status_label
from napari_vesuvius.widgets._settings import WidgetSettings
from napari_vesuvius.widgets._train_form import FOLDER, SETTING_NAMES, TrainForm
from napari_vesuvius.widgets._train_run import pair_paths
from napari_vesuvius.widgets._training_follower import POLL_INTERVAL_MS, FollowsTraining, TrainingFollower

if TYPE_CHECKING:
    import napari

__all__ = ["POLL_INTERVAL_MS", "TrainWidget"]


class TrainWidget(FollowsTraining, Container):
    """Data, model and epochs; Start / Cancel / Resume; progress and status; details, curves and log."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        from napari_vesuvius.widgets._train_plots import TrainPlot

        self.viewer = napari_viewer
        self.form = TrainForm(napari_viewer, say=self._say)
        self.start_button = primary_button("Start", tooltip="train in a new run folder")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.resume_button = PushButton(text="Resume", enabled=False, tooltip="continue the run folder's run")
        self.use_model_button = PushButton(
            text="Use this model", enabled=False, tooltip="the run's best checkpoint → the Predict step"
        )
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = status_label("idle", name="train_status")
        self.plot = TrainPlot(theme=getattr(napari_viewer, "theme", None))
        self.log = TextEdit(label="log", value="")
        self.log.native.setReadOnly(True)
        self.log.native.setPlaceholderText("log")
        self.log.native.setMaximumHeight(120)
        self.plot_section = Section("Curves", [self.plot], expanded=True, labels=False)
        self.log_section = Section("Log", [self.log], labels=False)
        self.save_task = TaskRunner(name="save_data_task")
        self.save_task.visible = False
        buttons = row(self.start_button, self.cancel_button, self.resume_button, name="train_buttons")
        super().__init__(
            widgets=[
                self.form, buttons, self.save_task, self.progress_bar, self.status, self.use_model_button,
                *self.form.sections, self.plot_section, self.log_section,
            ],
            labels=False,
        )  # fmt: skip
        compact(self)
        self.follower = TrainingFollower(
            self.native, progress=self.progress_bar, status=self.status, on_update=self._on_update,
            on_end=self._on_end, on_state=self._set_buttons,
        )  # fmt: skip
        self._last_note = ""
        self.settings = WidgetSettings("train", enabled=persist)
        self.settings.bind(self.form, SETTING_NAMES)
        self.form.connect()
        self.form.run_dir.changed.connect(lambda *_: self.watch_run_dir())
        self.start_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.resume_button.changed.connect(self.resume)
        self.use_model_button.changed.connect(self.use_model)
        self.watch_run_dir()

    def primary_controls(self) -> list[Any]:
        """The controls of the step's main action (the workbench keeps them in view)."""
        data = [self.form.data_folder] if self.form.data_source.value == FOLDER else [
            self.form.image, self.form.labels_layer, self.form.pair_buttons,
        ]  # fmt: skip
        return [
            self.form.data_source, *data, self.form.model_preset, self.form.init, self.form.epochs,
            self.start_button, self.cancel_button, self.resume_button, self.progress_bar, self.status,
        ]  # fmt: skip

    # -- the followed run (compatibility names used by tests and docs) ---------------------------------
    @property
    def watcher(self) -> Any:
        return self.follower.watcher

    @property
    def outcome(self) -> str:
        """How the last followed run ended: "", finished, cancelled, killed, stopped, error."""
        return self.follower.outcome

    @property
    def _watched(self) -> Path | None:
        return self.follower.run_dir

    # -- start / resume / cancel -----------------------------------------------------------------------
    def start(self) -> None:
        """Start a new run (saving the chosen layers into its folder first).

        An empty run folder field: a new folder in the runs folder (shown in the field once started).
        """
        from napari_vesuvius.core.training.rundir import TRAIN_STATE

        if self._busy():
            return
        run_dir = self.form.run_folder()
        new_folder = run_dir is None
        if run_dir is None:
            run_dir = self.form.new_run_folder()
        elif (run_dir / TRAIN_STATE).exists():  # a run that never saved a state may start over
            self._say(
                f"{run_dir} already holds a run: Resume it, or empty the run folder field for a new run"
            )
            return
        try:
            if self.form.data_source.value == FOLDER:
                config = self.form.build_config()
                self._show_folder(run_dir, new_folder)
                self._launch(config, run_dir)
                return
            layer_pairs = self.form.layer_pairs()
            targets = pair_paths(run_dir, [image.name for image, _ in layer_pairs])
            config = self.form.build_config(targets)  # settings checked before anything is written
        except VesuviusError as error:
            self._say(str(error), error=True)
            return
        self._show_folder(run_dir, new_folder)
        arrays = [(i.name, layer_array(i), lb.name, layer_array(lb)) for i, lb in layer_pairs]
        self._save_layers(arrays, targets, config, run_dir)

    def _show_folder(self, run_dir: Path, new_folder: bool) -> None:
        """Put a new run folder in the field (Resume, Use this model and a later session find it)."""
        if new_folder:
            self.form.run_dir.value = run_dir  # watch_run_dir ignores a folder that holds no run yet

    def _save_layers(self, arrays: list, targets: list, config: Any, run_dir: Path) -> None:
        from napari_vesuvius.widgets._train_run import save_pairs_job

        self.save_task.visible = True
        self._set_buttons()

        def saved(_: Any) -> None:
            self._say(f"saved {len(targets)} pair(s) in {run_dir / 'data'}")
            self._launch(config, run_dir)

        def finished() -> None:
            self.save_task.visible = False
            self._set_buttons()

        self.save_task.start(
            lambda: save_pairs_job(arrays, targets), description="saving training data",
            on_result=saved, on_error=lambda error: self._say(str(error)), on_finished=finished,
        )  # fmt: skip

    def resume(self) -> None:
        """Continue the run in the run folder with its stored settings."""
        from napari_vesuvius.core.training.rundir import CONFIG_JSON

        run_dir = self.form.run_folder()
        if run_dir is None:
            self._say("choose the run folder to resume (Run folder section)")
            return
        if self._busy():
            return
        if not (run_dir / CONFIG_JSON).exists():
            self._say(f"{run_dir} holds no run to resume")
            return
        self._launch(None, run_dir, resume=True)

    def _busy(self) -> bool:
        if self.running or self.save_task.running:
            self._say("a training is already running: cancel it first")
            return True
        return False

    def _launch(self, config: Any, run_dir: Path, resume: bool = False) -> None:
        try:
            process = self.follower.start(config, run_dir, resume=resume)
        except (OSError, VesuviusError) as error:
            self._say(f"could not start training: {error}", error=True)
            return
        self._last_note = ""
        self.plot.clear()
        self._log(f"{'resumed' if resume else 'started'} training (pid {process.pid}) in {run_dir}")

    def cancel(self) -> None:
        """Graceful stop (the run saves a checkpoint); a second press while cancelling kills it."""
        if self.save_task.running:
            self.save_task.cancel()
            return
        self.follower.cancel()

    # -- following the run -----------------------------------------------------------------------------
    def watch_run_dir(self, force: bool = False) -> None:
        """Follow the chosen run folder: show its curves, and re-attach to a training running there."""
        run_dir = self.form.run_folder()
        if run_dir == self._watched and not force:
            return
        if self.running:
            return  # keep following the run in progress
        self.plot.clear()
        self._last_note = ""
        pid = self.follower.watch(run_dir, attach=True)
        if pid is not None:
            self._say(f"following the training already running in {run_dir} (pid {pid})")

    def poll(self) -> None:
        """Read new metrics records now (the follower's timer does this every 500 ms)."""
        self.follower.poll()

    def _on_update(self, summary: Any, curves_changed: bool) -> None:
        if curves_changed:  # an epoch ended: new points, and a checkpoint to use
            self.plot.update_curves(summary.curves)
            self._set_buttons()
        if summary.state == "running" and summary.message and summary.message != self._last_note:
            self._last_note = summary.message
            self._log(summary.message)

    def _on_end(self, outcome: str, process: Any) -> None:
        """The followed process exited: say how it ended (and the log tail on an error)."""
        run = "" if self._watched is None else f" ({self._watched.name})"
        if outcome in ("killed", "stopped"):
            text = (
                f"training process {outcome} without saving: Resume continues from the last completed epoch"
            )
        elif outcome == "error":
            summary = self.follower.summary
            message = summary.message if summary is not None else ""
            text = f"training failed (exit code {process.poll()}): {message or 'see the log'}"
            tail = process.log_tail(2000).strip()
            if tail:
                self._log(tail)
        elif outcome == "cancelled":
            text = "cancelled: checkpoint and state saved; Resume continues the run"
        else:
            text = f"finished: best checkpoint {self.best_checkpoint()}{self._clean_up_note()}"
        self.status.value = text
        self._log(text)
        self.follower.announce(f"Training{run}: {text}", outcome)

    def _clean_up_note(self) -> str:
        """``; its clean-up: …`` when the run chose one for its best checkpoint (``postprocess.json``)."""
        from napari_vesuvius.core.postprocess import PostprocessConfig
        from napari_vesuvius.core.training.postprocess_step import POSTPROCESS_JSON

        path = None if self._watched is None else self._watched / POSTPROCESS_JSON
        if path is None or not path.is_file():
            return ""
        try:
            config = PostprocessConfig.load(path)
        except VesuviusError:
            return ""
        return f"; its clean-up: T low {config.t_low:g}, closing z{config.closing_z}/xy{config.closing_xy}"

    def _set_buttons(self) -> None:
        from napari_vesuvius.core.training.rundir import CONFIG_JSON

        busy = self.running or self.save_task.running
        run_dir = self._watched
        self.start_button.enabled = not busy
        self.cancel_button.enabled = busy
        self.cancel_button.text = "Kill now" if self.cancelling else "Cancel"
        summary = self.follower.summary
        finished = summary is not None and summary.state == "finished"
        self.resume_button.enabled = (
            not busy and run_dir is not None and (run_dir / CONFIG_JSON).exists() and not finished
        )
        self.use_model_button.enabled = self.best_checkpoint() is not None

    # -- use this model --------------------------------------------------------------------------------
    def best_checkpoint(self) -> Path | None:
        """``checkpoint_best.pt`` of the run folder, else ``checkpoint_last.pt``, else None."""
        from napari_vesuvius.core.proofread.finetune import best_checkpoint

        return None if self._watched is None else best_checkpoint(self._watched)

    def use_model(self) -> Any:
        """Hand the best checkpoint to the Inference step (opening one if needed); returns it."""
        from napari_vesuvius.widgets._docks import find_widget, show_widget
        from napari_vesuvius.widgets.inference_widget import InferenceWidget

        checkpoint = self.best_checkpoint()
        if checkpoint is None:
            self._say("no checkpoint yet: it is written at the end of each epoch")
            return None
        widget = find_widget(self.viewer, InferenceWidget)
        if widget is None:
            widget = InferenceWidget(self.viewer)
            self.viewer.window.add_dock_widget(widget, name="Inference", tabify=True)
        widget.models.model.value = checkpoint
        show_widget(self.viewer, widget)
        self._say(f"Inference model set to {checkpoint}")
        return widget

    # -- messages ------------------------------------------------------------------------------------------
    def _say(self, line: str, error: bool = False) -> None:
        self.status.value = line
        self._log(line)
        if error:
            from napari.utils.notifications import show_error

            show_error(line)

    def _log(self, text: str) -> None:
        self.log.value = (self.log.value + "\n" + text).strip()
