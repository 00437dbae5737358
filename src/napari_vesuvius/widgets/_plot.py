"""A small matplotlib canvas for the Score widget: mean score (and its terms) against the swept value.

matplotlib is imported when the canvas is built (only the Score widget does), so the plugin's import
stays fast. Colours follow the napari theme so the plot does not glare in the dark theme.
"""

from __future__ import annotations

from typing import Any

from magicgui.widgets import Container

from napari_vesuvius.widgets._format import count

#: Curves drawn for a sweep: result key, legend text, line style.
CURVES = (
    ("score", "score", "-"),
    ("topo", "TopoScore", ":"),
    ("surface_dice", "SurfaceDice", "--"),
    ("voi_score", "VOI score", "-."),
)


def value_text(value: float) -> str:
    """A swept value as text: integers as integers (``1,000``, never ``1e+03``), others in short form."""
    return count(value) if float(value).is_integer() else f"{value:g}"


def _theme_colors(theme_name: str | None) -> tuple[str, str, str]:
    """(background, text, accent) hex colours of the napari theme, with dark defaults."""
    try:
        from napari.utils.theme import get_theme

        theme = get_theme(theme_name or "dark")
        return theme.background.as_hex(), theme.text.as_hex(), theme.current.as_hex()
    except Exception:  # an unknown or broken theme must not break the widget
        return "#262930", "#f0f1f2", "#4560c4"


class SweepPlot(Container):
    """A magicgui container holding a ``FigureCanvasQTAgg``; :meth:`plot` draws a :class:`SweepResult`."""

    def __init__(self, theme: str | None = None, name: str = "sweep_plot") -> None:
        from matplotlib.backends.backend_qtagg import FigureCanvasQTAgg
        from matplotlib.figure import Figure

        super().__init__(labels=False, name=name)
        self.background, self.text_color, self.accent = _theme_colors(theme)
        self.figure = Figure(figsize=(3.6, 2.4), dpi=90, facecolor=self.background, layout="constrained")
        self.canvas = FigureCanvasQTAgg(self.figure)
        self.canvas.setMinimumHeight(210)
        self.native.layout().addWidget(self.canvas)
        self.axes = self.figure.add_subplot()
        #: what is drawn, for callers and tests: parameter name, x values, y values per curve, best index
        self.parameter: str | None = None
        self.x: list[float] = []
        self.curves: dict[str, list[float]] = {}
        self.best_index: int | None = None
        self.clear()

    def _style(self) -> None:
        axes = self.axes
        axes.set_facecolor(self.background)
        for spine in axes.spines.values():
            spine.set_color(self.text_color)
        axes.tick_params(colors=self.text_color, labelsize=8)
        axes.xaxis.label.set_color(self.text_color)
        axes.yaxis.label.set_color(self.text_color)

    def clear(self) -> None:
        """An empty plot with a hint."""
        self.axes.clear()
        self._style()
        self.parameter, self.x, self.curves, self.best_index = None, [], {}, None
        self.axes.text(
            0.5, 0.5, "run a sweep to plot score vs parameter", ha="center", va="center",
            color=self.text_color, fontsize=8, transform=self.axes.transAxes,
        )  # fmt: skip
        self.axes.set_xticks([])
        self.axes.set_yticks([])
        self.canvas.draw_idle()

    def plot(self, result: Any) -> None:
        """Draw the mean score and term means per value; mark the best value."""
        terms = result.mean_terms
        self.parameter = result.parameter
        self.x = [float(v) for v in result.values]
        self.curves = {key: list(terms[key]) for key, _, _ in CURVES}
        self.best_index = result.best_index
        axes = self.axes
        axes.clear()
        self._style()
        for key, text, style in CURVES:
            main = key == "score"
            axes.plot(
                self.x, self.curves[key], style, marker="o" if main else None, markersize=3,
                linewidth=2.0 if main else 1.0, alpha=1.0 if main else 0.7, label=text,
                color=self.accent if main else None,
            )  # fmt: skip
        best_x, best_y = self.x[self.best_index], self.curves["score"][self.best_index]
        right = best_x > (min(self.x) + max(self.x)) / 2  # put the label on the side with room
        axes.axvline(best_x, color="#f5c211", linewidth=0.8, alpha=0.6)
        axes.plot([best_x], [best_y], marker="*", markersize=12, color="#f5c211", linestyle="none")
        axes.annotate(
            f"best {value_text(best_x)}\n{best_y:.4f}", (best_x, best_y), textcoords="offset points",
            xytext=(-8 if right else 8, -26), ha="right" if right else "left", color=self.text_color,
            fontsize=8,
        )  # fmt: skip
        n = len(result.case_names)
        axes.set_xlabel(f"{result.parameter}  (mean over {n} volume{'s' if n != 1 else ''})", fontsize=8)
        axes.set_ylabel("score", fontsize=8)
        axes.set_ylim(0.0, 1.02)
        if all(x.is_integer() for x in self.x):  # an integer parameter: integer ticks, never 2.5
            from matplotlib.ticker import FuncFormatter, MaxNLocator

            axes.xaxis.set_major_locator(MaxNLocator(integer=True))
            axes.xaxis.set_major_formatter(FuncFormatter(lambda x, _: value_text(x)))
        axes.grid(alpha=0.2)
        legend = axes.legend(fontsize=7, loc="lower left", framealpha=0.5, facecolor=self.background)
        for text in legend.get_texts():
            text.set_color(self.text_color)
        self.canvas.draw_idle()
