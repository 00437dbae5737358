"""Layout pieces every dock uses, so the whole workbench fits a 1280×800 screen.

* :class:`Section`: a titled group of controls that collapses to one header line (advanced options start
  collapsed; a step's primary controls sit outside any collapsed section).
* :func:`status_label`: a message line that wraps instead of widening its dock.
* :func:`warning_label` / :func:`show_warning_text`: a status line for a warning that informs but does not
  stop the step (amber bar and ⚠ in the napari theme's warning colour), hidden while there is none.
* :func:`primary_button`: the one button that runs a step, styled so the eye finds it.
* :func:`compact`: tight margins for a container nested in a dock.

Qt is imported lazily (inside functions) like everywhere in ``widgets/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from magicgui.widgets import Container, Label, PushButton

_ARROW = {True: "▾", False: "▸"}


class Section(Container):
    """A collapsible, titled group: a flat header button and a body that hides when collapsed."""

    def __init__(
        self,
        title: str,
        widgets: Sequence[Any],
        *,
        expanded: bool = False,
        labels: bool = True,
        name: str | None = None,
        tooltip: str | None = None,
    ) -> None:
        self.title = title
        self.header = PushButton(text=title, tooltip=tooltip)
        self.body = Container(widgets=list(widgets), labels=labels)
        super().__init__(
            widgets=[self.header, self.body],
            labels=False,
            name=name or "section_" + "".join(c if c.isalnum() else "_" for c in title.lower()),
            label="",
        )
        self.label = ""  # magicgui drops label="" at construction: no "section …" label beside the header
        compact(self)
        compact(self.body, indent=8)
        self.header.native.setFlat(True)
        self.header.native.setStyleSheet("text-align: left; font-weight: bold; padding: 2px;")
        self.header.changed.connect(self.toggle)
        self._expanded = not expanded
        self.expanded = expanded

    @property
    def expanded(self) -> bool:
        """Whether the body is shown."""
        return self._expanded

    @expanded.setter
    def expanded(self, value: bool) -> None:
        self._expanded = bool(value)
        self.body.visible = self._expanded
        self.header.text = f"{_ARROW[self._expanded]} {self.title}"

    def toggle(self, *_: Any) -> None:
        self.expanded = not self.expanded


def compact(container: Container, indent: int = 0) -> Container:
    """Tight margins and spacing for a container nested in a dock (``indent``: left margin in px)."""
    container.margins = (indent, 0, 0, 0)
    layout = container.native.layout()
    if layout is not None:
        layout.setSpacing(2)
    return container


def row(*widgets: Any, name: str | None = None) -> Container:
    """Widgets side by side without labels (button rows)."""
    container = Container(widgets=list(widgets), layout="horizontal", labels=False, label="")
    if name:
        container.name = name
    return compact(container)


def status_label(value: str = "", name: str | None = None) -> Label:
    """A message line that wraps long text and never widens its dock (errors name long paths)."""
    from qtpy.QtWidgets import QSizePolicy

    label = Label(value=value, label="")
    if name:
        label.name = name
    label.native.setWordWrap(True)
    policy = label.native.sizePolicy()
    policy.setHorizontalPolicy(QSizePolicy.Policy.Ignored)
    label.native.setSizePolicy(policy)
    label.native.setTextInteractionFlags(label.native.textInteractionFlags() | _selectable())
    return label


def warning_label(name: str | None = None) -> Label:
    """A hidden :func:`status_label` that :func:`show_warning_text` fills and shows."""
    from qtpy.QtCore import Qt

    label = status_label(name=name)
    label.native.setTextFormat(Qt.TextFormat.RichText)
    label.native.setOpenExternalLinks(False)
    label.visible = False
    return label


def show_warning_text(label: Label, items: Sequence[Sequence[str]], theme: str | None = None) -> None:
    """Show warnings in ``label``: each item is a bold headline after a ⚠, then its paragraphs; none hides it.

    Colours come from the napari ``theme`` (its ``warning`` colour for the bar and the sign, the
    theme's text colour for the words, so they read on dark and light themes alike); ```code``` spans
    (command lines) are set in a fixed-width font.
    """
    if not items:
        label.value = ""
        label.visible = False
        return
    colour = _warning_colour(theme)
    red, green, blue = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    label.native.setStyleSheet(
        f"QLabel {{ border-left: 3px solid {colour}; background-color: rgba({red}, {green}, {blue}, 38);"
        " padding: 3px 4px 3px 6px; }"
    )
    label.value = '<div style="margin-top: 6px;"></div>'.join(
        f'<span style="color: {colour};">⚠</span> <b>{_html(headline)}</b>'
        + "".join(f'<div style="margin-top: 3px;">{_html(text)}</div>' for text in paragraphs if text)
        for headline, *paragraphs in items
    )
    label.visible = True


def _html(text: str) -> str:
    """``text`` escaped for a rich-text label, with ```code``` spans in a fixed-width font."""
    import re
    from html import escape

    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escape(text, quote=False))


def _warning_colour(theme: str | None) -> str:
    """The napari theme's warning colour as ``#rrggbb`` (napari's amber when the theme has none)."""
    try:
        from napari.utils.theme import get_theme

        return get_theme(theme or "dark").warning.as_hex()[:7]
    except Exception:  # an unknown or broken theme must not break the dock
        return "#e3b617"


def _selectable() -> Any:
    from qtpy.QtCore import Qt

    return Qt.TextInteractionFlag.TextSelectableByMouse


def primary_button(text: str, tooltip: str | None = None, name: str | None = None) -> PushButton:
    """The button that runs a step: bold, so it is found at a glance among the options."""
    button = PushButton(text=text, tooltip=tooltip)
    if name:
        button.name = name
    button.native.setStyleSheet("font-weight: bold;")
    return button


def fit_for_dock(root: Any, characters: int = 12) -> None:
    """Make every combo box and table under the Qt widget ``root`` behave in a narrow dock.

    * A Qt combo box grows with its longest item by default, so one long layer name (``<id> labels
      (1=surface, 2=ignore)``) would widen the whole dock beyond a laptop screen: combos are sized by
      ``characters`` instead (the open list shows the whole name, elided in the middle if need be).
    * magicgui's tables reformat every numeric-looking cell (an id ``370800000`` shows as ``3.708e+08``, a
      ``3.3`` as ``3.3000``): tables show their cells exactly as the step wrote them.

    The workbench applies this to every step (``workbench.StepScrollArea``), whichever way it is opened.
    """
    from qtpy.QtWidgets import QComboBox, QStyledItemDelegate, QTableWidget

    for combo in root.findChildren(QComboBox):
        combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        combo.setMinimumContentsLength(characters)
        combo.view().setTextElideMode(_elide_middle())
    for table in root.findChildren(QTableWidget):
        table.setItemDelegate(QStyledItemDelegate(table))


def _elide_middle() -> Any:
    from qtpy.QtCore import Qt

    return Qt.TextElideMode.ElideMiddle
