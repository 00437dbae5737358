"""The model chooser shared by the Inference and Export docks: one model, or a weighted ensemble.

A model is a built-in checkpoint file or an nnU-Net trained model folder (with its folds and checkpoint
name); *Add to ensemble* appends the current choice with its weight. :meth:`ModelPicker.specs` returns
:class:`~napari_vesuvius.core.inference.models.ModelSpec` s, which ``inference.models.load_models`` loads.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from magicgui.widgets import ComboBox, Container, FileEdit, FloatSpinBox, LineEdit, PushButton, TextEdit

if TYPE_CHECKING:
    from napari_vesuvius.core.inference.models import ModelSpec

NNUNET_CHECKPOINTS = ("checkpoint_final.pth", "checkpoint_best.pth")
#: the picker's sub-widgets whose values persist between sessions
PERSISTED = ["model", "folds", "checkpoint"]


def parse_folds(text: str) -> tuple[int, ...] | None:
    """``"0,1,2"`` → ``(0, 1, 2)``; empty → None (all folds found)."""
    text = text.strip()
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.replace(" ", "").split(",") if part)
    except ValueError:
        raise ValueError(f"folds must be comma-separated integers, got {text!r}") from None


class ModelPicker(Container):
    """Model path (file or nnU-Net folder), folds, checkpoint, weight and the ensemble list."""

    def __init__(self) -> None:
        self.model = FileEdit(
            label="model", mode="r", tooltip="built-in checkpoint (.pt) or nnU-Net model folder"
        )
        self.model_folder = PushButton(text="Choose nnU-Net folder…")
        self.folds = LineEdit(label="folds", value="", tooltip="nnU-Net folds, e.g. 0,1,2 (empty = all)")
        self.checkpoint = ComboBox(label="nnU-Net checkpoint", choices=list(NNUNET_CHECKPOINTS))
        self.weight = FloatSpinBox(label="weight", min=0.01, max=100.0, step=0.1, value=1.0)
        self.add_button = PushButton(text="Add to ensemble")
        self.clear_button = PushButton(text="Clear ensemble")
        self.ensemble = TextEdit(label="ensemble", value="")
        self.ensemble.native.setReadOnly(True)
        buttons = Container(widgets=[self.add_button, self.clear_button], layout="horizontal", labels=False)
        super().__init__(
            widgets=[
                self.model, self.model_folder, self.folds, self.checkpoint, self.weight, buttons,
                self.ensemble,
            ],
            label="model(s)",
        )  # fmt: skip
        self.members: list[ModelSpec] = []
        self.model_folder.changed.connect(self._choose_folder)
        self.clear_button.changed.connect(self.clear_members)

    def _choose_folder(self) -> None:
        from qtpy.QtWidgets import QFileDialog

        folder = QFileDialog.getExistingDirectory(self.native, "nnU-Net trained model folder")
        if folder:
            self.model.value = folder

    def current(self, weight: float = 1.0) -> ModelSpec:
        """The model described by the fields now; ValueError for a missing model or bad folds."""
        from napari_vesuvius.core.inference.models import ModelSpec

        text = str(self.model.value or "").strip()
        path = None if text in ("", ".") else Path(text)
        if path is None or not path.exists():
            raise ValueError(f"model not found: {path or '(none chosen)'}")
        return ModelSpec(path, weight, parse_folds(self.folds.value), self.checkpoint.value)

    def add_member(self) -> None:
        """Append the current model with its weight to the ensemble (ValueError on bad input)."""
        self.members.append(self.current(float(self.weight.value)))
        self.ensemble.value = "\n".join(
            f"{m.weight:g} × {m.path.name}" + (f" folds {list(m.folds)}" if m.folds else "")
            for m in self.members
        )

    def clear_members(self, *_: Any) -> None:
        self.members = []
        self.ensemble.value = ""

    def specs(self) -> list[ModelSpec]:
        """The ensemble, or the single chosen model when the ensemble is empty."""
        return list(self.members) if self.members else [self.current()]
