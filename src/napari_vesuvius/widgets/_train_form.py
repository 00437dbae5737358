"""The settings form of the Train widget: data (folder or layer pairs), model, schedule, run folder.

The form itself holds what a run needs at a glance (data, model, start-from checkpoint, epochs); the
details sit in collapsed :class:`~napari_vesuvius.widgets._sections.Section` s the widget places below its
buttons (:attr:`TrainForm.sections`): schedule, augmentation, run folder. An empty run folder means a new
``train-<date>-<time>`` folder in the *runs folder* preference (napari Preferences › napari-vesuvius),
else in ``~/napari-vesuvius-runs``. :meth:`TrainForm.build_config` turns the form into the exact
:class:`~napari_vesuvius.core.training.config.TrainConfig` the training process runs.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import (
    CheckBox,
    ComboBox,
    Container,
    FileEdit,
    FloatSpinBox,
    Label,
    LineEdit,
    PushButton,
    RadioButtons,
    SpinBox,
    TextEdit,
)

from napari_vesuvius.core.errors import VesuviusError
from napari_vesuvius.widgets._sections import Section, compact, row

if TYPE_CHECKING:
    import napari

#: built-in U-Net sizes (``core.inference.unet.PRESETS``; not imported here: that module imports torch)
MODEL_PRESETS = ("tiny", "small", "medium")
FOLDER, LAYERS = "dataset folder", "open layers"
#: the form fields that persist between sessions
SETTING_NAMES = [
    "data_source", "data_folder", "model_preset", "init", "patch_z", "patch_y", "patch_x", "epochs",
    "iterations_per_epoch", "batch_size", "optimizer", "lr", "device", "val_fraction", "score_every",
    "threads", "max_minutes", "augment", "normalization", "run_dir",
]  # fmt: skip
#: where new run folders go when the *runs folder* preference is empty
DEFAULT_RUNS_FOLDER = Path("~/napari-vesuvius-runs")


def path_or_none(value: Any) -> Path | None:
    """A FileEdit value, or None when it is empty (magicgui reports an empty path as ``.``)."""
    text = str(value or "").strip()
    return None if text in ("", ".") else Path(text).expanduser()


class TrainForm(Container):
    """Every training setting the widget offers; ``say`` receives short messages for the user."""

    def __init__(self, viewer: napari.viewer.Viewer, say: Callable[[str], None] | None = None) -> None:
        self.viewer = viewer
        self.say = say or (lambda message: None)
        self.data_source = RadioButtons(
            label="data", choices=[FOLDER, LAYERS], value=FOLDER, orientation="horizontal"
        )
        self.data_folder = FileEdit(
            label="dataset", mode="d",
            tooltip="challenge folder (train_images/ + train_labels/), a run folder or images/ + labels/",
        )  # fmt: skip
        self.image = ComboBox(label="image", choices=self._layer_choices("Image"), nullable=True)
        self.labels_layer = ComboBox(label="labels", choices=self._layer_choices("Labels"), nullable=True)
        self.add_pair_button = PushButton(text="Add pair")
        self.clear_pairs_button = PushButton(text="Clear pairs")
        self.pair_buttons = row(self.add_pair_button, self.clear_pairs_button)
        self.pairs_view = TextEdit(label="pairs", value="")
        self.pairs_view.native.setReadOnly(True)
        self.pairs_view.native.setMaximumHeight(60)
        self.pairs_view.native.setPlaceholderText("none added: the image + labels chosen above")
        self.model_preset = ComboBox(label="model size", choices=list(MODEL_PRESETS), value="small")
        self.init = FileEdit(
            label="start from", mode="r",
            tooltip="optional checkpoint (.pt) or nnU-Net model folder to fine-tune; empty = from scratch",
        )  # fmt: skip
        self.init_folder = PushButton(text="Choose nnU-Net folder…")
        self.patch_z, self.patch_y, self.patch_x = (_patch_edge(axis) for axis in "zyx")
        self.patch = Container(
            widgets=[self.patch_z, self.patch_y, self.patch_x], layout="horizontal", label="patch (Z Y X)",
            labels=False,
        )  # fmt: skip
        compact(self.patch)
        self.epochs = SpinBox(label="epochs", min=1, max=100_000, value=100)
        self.iterations_per_epoch = SpinBox(label="iterations / epoch", min=1, max=1_000_000, value=250)
        self.total_label = Label(label="total", value="")
        self.batch_size = SpinBox(label="batch size", min=1, max=256, value=2)
        self.optimizer = ComboBox(label="optimizer", choices=["sgd", "adamw"], value="sgd")
        self.lr = LineEdit(label="learning rate", value="", tooltip="empty = the optimizer's default")
        self.device = ComboBox(label="device", choices=["auto", "cpu", "cuda", "mps"], value="auto")
        self.val_fraction = FloatSpinBox(
            label="validation fraction", min=0.0, max=0.9, step=0.05, value=0.2,
            tooltip="fraction of the volumes held out for validation",
        )  # fmt: skip
        self.score_every = SpinBox(
            label="score every", min=0, max=10_000, value=0,
            tooltip="leaderboard score every N epochs (0 = never; pseudo-Dice every epoch)",
        )  # fmt: skip
        self.threads = SpinBox(label="CPU threads", min=0, max=256, value=0, tooltip="0 = torch's choice")
        self.max_minutes = FloatSpinBox(
            label="time limit (min)", min=0.0, max=1_000_000.0, step=5.0, value=0.0,
            tooltip="stop after this many minutes (validation included; the learning rate decays to it); "
            "0 = no limit, the run does every epoch",
        )  # fmt: skip
        self.augment = CheckBox(
            text="augment patches", value=True,
            tooltip="random mirrors, 90° turns, small rotations and scaling, brightness, contrast, gamma, "
            "noise and blur of the CT (off: the patches as they are)",
        )  # fmt: skip
        from napari_vesuvius.core.training.config import NORMALIZATIONS  # torch-free (connect reads it too)

        self.normalization = ComboBox(
            label="intensity normalisation", choices=list(NORMALIZATIONS), value="auto",
            tooltip="how CT intensities are normalised (stored in the checkpoint, applied alike at "
            "inference): zscore = each volume's mean/std over its scanned region, robust to another "
            "scroll's brightness; percentile = each volume's 1st/99th percentiles of its scanned voxels to "
            "-1/+1; scale = fixed (x - 127.5) / 127.5 on the uint8 range; auto = percentile "
            "(with 'start from': the model's own)",
        )  # fmt: skip
        self.run_dir = FileEdit(
            label="run folder",
            mode="d",
            tooltip="empty: a new folder in the runs folder; an existing run folder to resume or follow",
        )
        self.runs_note = Label(value="")
        self.runs_note.native.setWordWrap(True)
        super().__init__(
            widgets=[
                self.data_source, self.data_folder, self.image, self.labels_layer, self.pair_buttons,
                self.pairs_view, self.model_preset, self.init, self.epochs,
            ]
        )  # fmt: skip
        compact(self)
        #: the collapsed details, placed by the widget below its buttons
        self.schedule_section = Section(
            "Schedule and model details",
            [
                self.iterations_per_epoch, self.total_label, self.patch, self.batch_size, self.optimizer,
                self.lr, self.device, self.val_fraction, self.score_every, self.threads, self.max_minutes,
                self.normalization, self.init_folder,
            ],
        )  # fmt: skip
        self.augment_section = Section("Augmentation", [self.augment], labels=False)
        self.run_section = Section("Run folder", [self.run_dir, self.runs_note])
        self.sections = [self.schedule_section, self.augment_section, self.run_section]
        self.pairs: list[tuple[Any, Any]] = []  # (image layer, labels layer)

    def connect(self) -> None:
        """Wire the form's own reactions (after settings were restored) and show the derived values."""
        self.data_source.changed.connect(self._show_source)
        self.epochs.changed.connect(self._show_total)
        self.iterations_per_epoch.changed.connect(self._show_total)
        self.optimizer.changed.connect(self._show_lr_default)
        self.add_pair_button.changed.connect(self.add_pair)
        self.clear_pairs_button.changed.connect(self.clear_pairs)
        self.init_folder.changed.connect(self._choose_init_folder)
        events = self.viewer.layers.events
        events.inserted.connect(self.reset_choices)
        events.removed.connect(self._layers_removed)

        def disconnect(*_: Any) -> None:  # the viewer outlives a closed dock widget
            events.inserted.disconnect(self.reset_choices)
            events.removed.disconnect(self._layers_removed)

        self.native.destroyed.connect(disconnect)
        self._show_source()
        self._show_total()
        self._show_lr_default()
        self._show_runs_folder()
        self.reset_choices()

    # -- choices & pairs ---------------------------------------------------------------------------
    def _layer_choices(self, kind: str) -> Callable[..., list[tuple[str, Any]]]:
        def choices(*_: Any) -> list[tuple[str, Any]]:
            import napari.layers

            viewer = getattr(self, "viewer", None)
            if viewer is None:
                return []
            cls = getattr(napari.layers, kind)
            return [(layer.name, layer) for layer in viewer.layers if type(layer) is cls]

        return choices

    def _layers_removed(self, *_: Any) -> None:
        alive = list(self.viewer.layers)
        self.pairs = [(i, lb) for i, lb in self.pairs if i in alive and lb in alive]
        self._show_pairs()
        self.reset_choices()

    def _show_source(self, *_: Any) -> None:
        layers = self.data_source.value == LAYERS
        self.data_folder.visible = not layers
        for widget in (self.image, self.labels_layer, self.pair_buttons, self.pairs_view):
            widget.visible = layers

    def _show_total(self, *_: Any) -> None:
        total = int(self.epochs.value) * int(self.iterations_per_epoch.value)
        self.total_label.value = (
            f"{total:,} iterations ({self.epochs.value} × {self.iterations_per_epoch.value})"
        )

    def _show_runs_folder(self) -> None:
        self.runs_note.value = f"empty: a new run folder in {runs_folder()}"
        self.run_dir.native.setToolTip(self.runs_note.value)

    def _show_lr_default(self, *_: Any) -> None:
        from napari_vesuvius.core.training.config import OPTIMIZER_DEFAULTS

        self.lr.native.setPlaceholderText(f"default {OPTIMIZER_DEFAULTS[self.optimizer.value]['lr']:g}")

    def _choose_init_folder(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "nnU-Net trained model folder")
        if folder:
            self.init.value = folder

    def add_pair(self) -> None:
        """Add the chosen image + labels layers to the training pairs."""
        if self.image.value is None or self.labels_layer.value is None:
            self.say("choose an image and a labels layer first")
            return
        self.pairs.append((self.image.value, self.labels_layer.value))
        self._show_pairs()

    def clear_pairs(self) -> None:
        self.pairs = []
        self._show_pairs()

    def _show_pairs(self) -> None:
        self.pairs_view.value = "\n".join(f"{i.name}  +  {lb.name}" for i, lb in self.pairs)

    def layer_pairs(self) -> list[tuple[Any, Any]]:
        """The added (image, labels) layer pairs, else the one chosen in the combo boxes."""
        if self.pairs:
            return list(self.pairs)
        if self.image.value is None or self.labels_layer.value is None:
            raise VesuviusError("choose an image and a labels layer (or add pairs) to train on open layers")
        return [(self.image.value, self.labels_layer.value)]

    # -- settings → config ---------------------------------------------------------------------------
    def run_folder(self) -> Path | None:
        """The chosen run folder (absolute), or None."""
        run_dir = path_or_none(self.run_dir.value)
        return None if run_dir is None else run_dir.resolve()

    def new_run_folder(self) -> Path:
        """A new, not yet existing ``train-<date>-<time>`` folder in the runs folder."""
        base = runs_folder() / f"train-{time.strftime('%Y%m%d-%H%M%S')}"
        path, count = base, 1
        while path.exists():
            count += 1
            path = base.with_name(f"{base.name}-{count}")
        return path

    def build_config(self, pairs: list[tuple[Path, Path]] | None = None) -> Any:
        """The :class:`TrainConfig` of the form: the dataset folder, or ``pairs`` (saved layer files)."""
        from napari_vesuvius.core.training.config import TrainConfig, TrainConfigError

        text = self.lr.value.strip()
        try:
            lr = float(text) if text else None
        except ValueError:
            raise TrainConfigError(f"learning rate must be a number, got {text!r}") from None
        data: tuple[str, ...] = ()
        if pairs is None:
            folder = path_or_none(self.data_folder.value)
            if folder is None:
                raise TrainConfigError("choose a dataset folder")
            data = (str(folder.resolve()),)
        from napari_vesuvius.core.training.config import AugmentConfig

        init = path_or_none(self.init.value)
        return TrainConfig(
            epochs=int(self.epochs.value), iterations_per_epoch=int(self.iterations_per_epoch.value),
            patch_size=(int(self.patch_z.value), int(self.patch_y.value), int(self.patch_x.value)),
            batch_size=int(self.batch_size.value), data=data,
            pairs=tuple((str(i.resolve()), str(lb.resolve())) for i, lb in pairs or ()),
            val_fraction=float(self.val_fraction.value), model_preset=self.model_preset.value,
            init=None if init is None else str(init.resolve()), device=self.device.value,
            optimizer=self.optimizer.value, lr=lr, score_every=int(self.score_every.value),
            torch_threads=int(self.threads.value), max_minutes=float(self.max_minutes.value),
            augment=AugmentConfig() if self.augment.value else AugmentConfig.none(),
            normalization=self.normalization.value,
        )  # fmt: skip


def runs_folder() -> Path:
    """Where new run folders go: the *runs folder* preference, else :data:`DEFAULT_RUNS_FOLDER`."""
    from napari_vesuvius.widgets._preferences import preference

    chosen = str(preference("runs_folder") or "").strip()
    return (Path(chosen) if chosen else DEFAULT_RUNS_FOLDER).expanduser().resolve()


def _patch_edge(axis: str) -> SpinBox:
    """One edge of the training patch: a plain number field (no −/+ buttons, so three fit one row of a
    laptop-width dock beside their label even with the scroll bar shown); arrow keys and the wheel step 8."""
    from qtpy.QtWidgets import QAbstractSpinBox

    edge = SpinBox(
        label=axis, min=8, max=512, step=8, value=128,
        tooltip=f"patch edge along {axis} in voxels (a multiple of 8; arrow keys or the wheel step by 8)",
    )  # fmt: skip
    edge.native.setButtonSymbols(QAbstractSpinBox.ButtonSymbols.NoButtons)
    # napari's theme gives every spin box a 70 px minimum; "512" needs about 30 (the row stretches them)
    edge.native.setStyleSheet("QAbstractSpinBox { min-width: 32px; }")
    return edge
