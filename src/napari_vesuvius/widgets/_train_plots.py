"""Live training curves for the Train widget: losses (top) and validation scores (bottom) vs epoch.

matplotlib is imported when the canvas is built (only the Train widget does). Lines are updated in
place (``set_data``) and redrawn with ``draw_idle``, so a refresh every timer tick stays cheap.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from magicgui.widgets import Container

from napari_vesuvius.widgets._plot import _theme_colors

#: curve key (a ``RunSummary.curves`` key) → (axes index, legend text, line style, colour)
CURVES: dict[str, tuple[int, str, str, str]] = {
    "train_loss": (0, "train loss", "-", "#4c9be8"),
    "val_loss": (0, "validation loss", "--", "#f28e2b"),
    "pseudo_dice": (1, "pseudo-Dice", "-", "#59a14f"),
    "score": (1, "leaderboard score", "-", "#f5c211"),
}


class TrainPlot(Container):
    """Two stacked matplotlib axes sharing the epoch axis, embedded as a ``FigureCanvasQTAgg``."""

    def __init__(self, theme: str | None = None, name: str = "train_plot") -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(labels=False, name=name)
        self.background, self.text_color, self.accent = _theme_colors(theme)
        self.figure = Figure(figsize=(3.6, 3.4), dpi=90, facecolor=self.background, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(260)
        self.native.layout().addWidget(self.canvas)
        loss_axes = self.figure.add_subplot(2, 1, 1)
        score_axes = self.figure.add_subplot(2, 1, 2, sharex=loss_axes)
        self.axes = (loss_axes, score_axes)
        #: the matplotlib line of each curve (tests read ``get_xdata``)
        self.lines: dict[str, Any] = {}
        for key, (index, text, style, color) in CURVES.items():
            (line,) = self.axes[index].plot([], [], style, marker="o", markersize=2.5, linewidth=1.4,
                                            color=color, label=text)  # fmt: skip
            self.lines[key] = line
        self._style()
        self.hint = loss_axes.text(
            0.5, 0.5, "curves appear after the first epoch", ha="center", va="center",
            color=self.text_color, fontsize=8, transform=loss_axes.transAxes,
        )  # fmt: skip
        self.clear()

    def _style(self) -> None:
        loss_axes, score_axes = self.axes
        for axes in self.axes:
            axes.set_facecolor(self.background)
            for spine in axes.spines.values():
                spine.set_color(self.text_color)
            axes.tick_params(colors=self.text_color, labelsize=7)
            axes.grid(alpha=0.2)
        from matplotlib.ticker import MaxNLocator

        score_axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        loss_axes.set_ylabel("loss", fontsize=8, color=self.text_color)
        score_axes.set_ylabel("validation", fontsize=8, color=self.text_color)
        score_axes.set_xlabel("epoch", fontsize=8, color=self.text_color)
        score_axes.set_ylim(0.0, 1.02)
        loss_axes.tick_params(labelbottom=False)
        for axes in self.axes:
            legend = axes.legend(fontsize=7, loc="best", framealpha=0.5, facecolor=self.background)
            for text in legend.get_texts():
                text.set_color(self.text_color)

    def update_curves(self, curves: Mapping[str, Sequence[tuple[int, float]]]) -> None:
        """Show ``{key: [(epoch, value), ...]}`` (missing keys: empty curves)."""
        has_data = False
        for key, line in self.lines.items():
            points = list(curves.get(key, ()))
            line.set_data([p[0] for p in points], [p[1] for p in points])
            has_data = has_data or bool(points)
        self.hint.set_visible(not has_data)
        loss_axes, score_axes = self.axes
        epochs = [p[0] for points in curves.values() for p in points]
        loss_axes.set_xlim(0.5, max([*epochs, 2]) + 0.5)
        if has_data:
            loss_axes.relim()
            loss_axes.autoscale_view(scalex=False)
        else:
            loss_axes.set_ylim(0.0, 1.0)
        score_axes.set_ylim(0.0, 1.02)
        self.canvas.draw_idle()

    def clear(self) -> None:
        """Empty curves (a new run folder)."""
        self.update_curves({})

    def point_count(self, key: str) -> int:
        """How many points the curve ``key`` shows."""
        return len(self.lines[key].get_xdata())
