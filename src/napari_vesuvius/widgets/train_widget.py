"""Train dock widget: train or fine-tune a surface model in a separate process, with live curves.

Start runs ``napari-vesuvius train`` as its own process (:mod:`napari_vesuvius.core.training.process`)
in the chosen run folder; the widget follows ``metrics.jsonl`` with a 500 ms ``QTimer`` (no blocking
call in the GUI thread), showing a progress bar with the recent rate and ETA and plotting training
loss, validation loss, pseudo-Dice and leaderboard score per epoch. Cancel is graceful (SIGTERM: the
run finishes its iteration, saves a checkpoint and its state); pressing it again while cancelling
kills at once (the run resumes from its last epoch). Resume continues a run folder with its stored
settings. "Use this model" hands ``checkpoint_best.pt`` (else ``checkpoint_last.pt``) to the
Inference widget, docking one if none is open.

Closing napari leaves a running training alone: the process runs in its own session, every file it
writes is atomic, and choosing the same run folder again (or reopening the widget, whose run folder
setting persists) re-attaches to it, so it can be followed and cancelled from the new session.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import Container, Label, ProgressBar, PushButton, TextEdit

from napari_vesuvius.core.errors import VesuviusError
from napari_vesuvius.widgets._background import TaskRunner
from napari_vesuvius.widgets._layers import layer_array
from napari_vesuvius.widgets._settings import WidgetSettings
from napari_vesuvius.widgets._train_form import FOLDER, SETTING_NAMES, TrainForm
from napari_vesuvius.widgets._train_run import AttachedRun, format_duration, pair_paths, recent_rate

if TYPE_CHECKING:
    import napari

#: how often the metrics log and the process are checked (ms)
POLL_INTERVAL_MS = 500


class TrainWidget(Container):
    """Data, model and schedule settings; Start / Cancel / Resume; progress, ETA and live curves."""

    def __init__(self, napari_viewer: napari.viewer.Viewer, persist: bool | None = None) -> None:
        from qtpy.QtCore import QTimer

        from napari_vesuvius.widgets._train_plots import TrainPlot

        self.viewer = napari_viewer
        self.form = TrainForm(napari_viewer, say=self._say)
        self.start_button = PushButton(text="Start")
        self.cancel_button = PushButton(text="Cancel", enabled=False)
        self.resume_button = PushButton(text="Resume", enabled=False)
        self.use_model_button = PushButton(text="Use this model", enabled=False)
        self.progress_bar = ProgressBar(value=0, min=0, max=1000, label="progress")
        self.status = Label(value="idle")
        self.plot = TrainPlot(theme=getattr(napari_viewer, "theme", None))
        self.log = TextEdit(label="log", value="")
        self.log.native.setReadOnly(True)
        self.log.native.setPlaceholderText("log")
        self.log.native.setMaximumHeight(120)
        output = Container(widgets=[self.plot, self.log], labels=False)
        self.save_task = TaskRunner(name="save_data_task")
        self.save_task.visible = False
        buttons = Container(
            widgets=[self.start_button, self.cancel_button, self.resume_button], layout="horizontal",
            labels=False,
        )  # fmt: skip
        super().__init__(
            widgets=[
                self.form, buttons, self.save_task, self.progress_bar, self.status, self.use_model_button,
                output,
            ],
            labels=False,
        )  # fmt: skip
        self.process: Any = None  # TrainingProcess or AttachedRun while one is followed
        self.watcher: Any = None  # RunWatcher of the current run folder
        self.cancelling = False
        self._watched: Path | None = None
        #: how the last followed run ended: "", finished, cancelled, killed, error
        self.outcome = ""
        self._last_note = ""
        self._killed = False
        self.timer = QTimer(self.native)
        self.timer.setInterval(POLL_INTERVAL_MS)
        self.timer.timeout.connect(self.poll)
        self.settings = WidgetSettings("train", enabled=persist)
        self.settings.bind(self.form, SETTING_NAMES)
        self.form.connect()
        self.form.run_dir.changed.connect(lambda *_: self.watch_run_dir())
        self.start_button.changed.connect(self.start)
        self.cancel_button.changed.connect(self.cancel)
        self.resume_button.changed.connect(self.resume)
        self.use_model_button.changed.connect(self.use_model)
        self.watch_run_dir()

    # -- start / resume / cancel -----------------------------------------------------------------------
    def _run_folder(self) -> Path | None:
        run_dir = self.form.run_folder()
        if run_dir is None:
            self._say("choose a run folder")
        return run_dir

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self) -> None:
        """Start a new run in the run folder (saving the chosen layers into it first)."""
        from napari_vesuvius.core.training.rundir import TRAIN_STATE

        run_dir = self._run_folder()
        if run_dir is None or self._busy():
            return
        if (run_dir / TRAIN_STATE).exists():  # a run that never saved a state may start over
            self._say(f"{run_dir} already holds a run: Resume it, or choose a new run folder")
            return
        try:
            if self.form.data_source.value == FOLDER:
                self._launch(self.form.build_config(), run_dir)
                return
            layer_pairs = self.form.layer_pairs()
            targets = pair_paths(run_dir, [image.name for image, _ in layer_pairs])
            config = self.form.build_config(targets)  # settings checked before anything is written
        except VesuviusError as error:
            self._say(str(error), error=True)
            return
        arrays = [(i.name, layer_array(i), lb.name, layer_array(lb)) for i, lb in layer_pairs]
        self._save_layers(arrays, targets, config, run_dir)

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

        run_dir = self._run_folder()
        if run_dir is None or self._busy():
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
        from napari_vesuvius.core.training.process import TrainingProcess

        try:
            self.process = TrainingProcess.start(config, run_dir, resume=resume)
        except (OSError, VesuviusError) as error:
            self._say(f"could not start training: {error}", error=True)
            return
        self.cancelling = self._killed = False
        self.outcome = ""
        self.watch_run_dir(force=True)
        self._say(f"{'resumed' if resume else 'started'} training (pid {self.process.pid}) in {run_dir}")
        self.timer.start()
        self._set_buttons()

    def cancel(self) -> None:
        """Graceful stop (the run saves a checkpoint); a second press while cancelling kills it."""
        if self.save_task.running:
            self.save_task.cancel()
            return
        if not self.running:
            return
        if self.cancelling:
            self.process.kill()
            self._killed = True
            return
        self.process.cancel()
        self.cancelling = True
        self.status.value = "cancelling… (finishing the iteration and saving a checkpoint)"
        self._set_buttons()

    # -- following the run -----------------------------------------------------------------------------
    def watch_run_dir(self, force: bool = False) -> None:
        """Follow the chosen run folder: show its curves, and re-attach to a training running there."""
        from napari_vesuvius.core.training.monitor import RunWatcher
        from napari_vesuvius.core.training.process import running_pid

        run_dir = self.form.run_folder()
        if run_dir == self._watched and not force:
            return
        if self.running and not force:
            return  # keep following the run in progress
        self._watched = run_dir
        self.watcher = None if run_dir is None else RunWatcher(run_dir)
        self.plot.clear()
        self.progress_bar.value = 0
        if run_dir is None:
            self._set_buttons()
            return
        if self.process is None or not self.process.running:
            pid = running_pid(run_dir)
            self.process = None if pid is None else AttachedRun(run_dir, pid)
            if self.process is not None:
                self._say(f"following the training already running in {run_dir} (pid {pid})")
                self.timer.start()
        self.poll()

    def poll(self) -> None:
        """Timer tick: read new metrics records, refresh progress and plot, notice the process exit."""
        if self.watcher is not None and self.watcher.poll():
            self._show_summary()
        if self.process is not None and not self.process.running:
            if self.watcher is not None and self.watcher.poll():
                self._show_summary()
            self._finished()
        self._set_buttons()

    def _show_summary(self) -> None:
        summary = self.watcher.summary
        self.progress_bar.value = int(1000 * summary.fraction)
        self.plot.update_curves(summary.curves)
        if summary.state == "running":
            if self.cancelling:
                return
            if summary.message and summary.message != self._last_note:
                self._last_note = summary.message
                self._log(summary.message)
            rate = recent_rate(self.watcher.records)
            eta = (summary.iterations - summary.iteration) / rate if rate else summary.eta_s
            speed = f" · {rate:.2f} it/s" if rate else ""
            per_epoch = summary.iterations // summary.epochs if summary.epochs else 0
            epoch = min(summary.epochs, summary.iteration // per_epoch + 1) if per_epoch else summary.epoch
            self.status.value = (
                f"epoch {epoch}/{summary.epochs} · iteration {summary.iteration:,}/{summary.iterations:,}"
                f"{speed} · ETA {format_duration(eta)}"
            )
        elif summary.state != "not_started":
            best = ""
            if summary.best_metric is not None:
                best = f" · best {summary.best_metric:.4f} (epoch {summary.best_epoch})"
            self.status.value = (
                f"{summary.state}: {summary.iteration:,}/{summary.iterations:,} iterations{best}"
            )

    def _finished(self) -> None:
        """The followed process exited: report how it ended (and the log tail on an error)."""
        process, self.process = self.process, None
        self.timer.stop()
        self.cancelling = False
        state = self.watcher.summary.state if self.watcher is not None else "not_started"
        code = process.poll()
        if state in ("running", "not_started"):  # no final record: the process did not end cleanly
            if self._killed:
                state = "killed"
            elif isinstance(process, AttachedRun):
                state = "stopped"  # not our child: its exit code is unknown
            else:
                state = "error"
        self.outcome = state
        if state in ("killed", "stopped"):
            self._say(
                f"training process {state} without saving: Resume continues from the last completed epoch"
            )
        elif state == "error":
            message = self.watcher.summary.message if self.watcher is not None else ""
            tail = process.log_tail(2000).strip()
            self._say(f"training failed (exit code {code}): {message or 'see the log'}", error=True)
            if tail:
                self._log(tail)
        elif state == "cancelled":
            self._say("cancelled: checkpoint and state saved; Resume continues the run")
        else:
            self._say(f"finished: best checkpoint {self.best_checkpoint()}{self._clean_up_note()}")

    def _clean_up_note(self) -> str:
        """``; its clean-up: …`` when the run chose one for its best checkpoint (``postprocess.json``)."""
        from napari_vesuvius.core.errors import VesuviusError
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
        finished = self.watcher is not None and self.watcher.summary.state == "finished"
        self.resume_button.enabled = (
            not busy and run_dir is not None and (run_dir / CONFIG_JSON).exists() and not finished
        )
        self.use_model_button.enabled = self.best_checkpoint() is not None

    # -- use this model --------------------------------------------------------------------------------
    def best_checkpoint(self) -> Path | None:
        """``checkpoint_best.pt`` of the run folder, else ``checkpoint_last.pt``, else None."""
        from napari_vesuvius.core.training.rundir import CHECKPOINT_BEST, CHECKPOINT_LAST

        if self._watched is None:
            return None
        for name in (CHECKPOINT_BEST, CHECKPOINT_LAST):
            if (self._watched / name).is_file():
                return self._watched / name
        return None

    def use_model(self) -> Any:
        """Hand the best checkpoint to the docked Inference widget (docking one if needed); returns it."""
        from napari_vesuvius.widgets.inference_widget import InferenceWidget

        checkpoint = self.best_checkpoint()
        if checkpoint is None:
            self._say("no checkpoint yet: it is written at the end of each epoch")
            return None
        docked = [w for w in self.viewer.window.dock_widgets.values() if isinstance(w, InferenceWidget)]
        widget = docked[0] if docked else InferenceWidget(self.viewer)
        if not docked:
            self.viewer.window.add_dock_widget(widget, name="Inference", tabify=True)
        widget.models.model.value = checkpoint
        self._say(f"Inference widget model set to {checkpoint}")
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
