"""Finding another open step of the plugin: a tab of the workbench or a dock of its own.

Docks cooperate (Score reads Tune's settings, Export uses Tune's clean-up, Train hands its model to
Inference, Proofread fine-tunes the model behind a prediction). They find each other only through
:func:`find_widget`, whichever way the user opened them.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def open_widgets(viewer: Any) -> list[Any]:
    """Every plugin widget open in ``viewer``'s window: docks, and the tabs of a docked workbench."""
    window = getattr(viewer, "window", None)
    docks = getattr(window, "dock_widgets", None) if window is not None else None
    if docks is None:
        return []
    found: list[Any] = []
    for widget in docks.values():
        widget = getattr(widget, "_magic_widget", widget)
        tabs = getattr(widget, "steps", None)
        if callable(tabs):  # a Workbench: its steps first, in tab order
            found.extend(tabs())
        found.append(widget)
    return found


def find_widget(viewer: Any, cls: type[T]) -> T | None:
    """The open widget of type ``cls`` (a workbench tab first, then a separate dock), or None."""
    for widget in open_widgets(viewer):
        if isinstance(widget, cls):
            return widget
    return None


def show_widget(viewer: Any, widget: Any) -> None:
    """Bring ``widget`` to the front: select its workbench tab, or raise its dock."""
    window = getattr(viewer, "window", None)
    docks = getattr(window, "dock_widgets", None) if window is not None else None
    for docked in (docks or {}).values():
        docked = getattr(docked, "_magic_widget", docked)
        if callable(getattr(docked, "show_step", None)) and widget in docked.steps():
            docked.show_step(widget)
            widget = docked
            break
    native = getattr(widget, "native", widget)
    dock = native.parent() if native is not None else None
    if dock is not None and hasattr(dock, "raise_"):
        dock.show()
        dock.raise_()
