"""Finding another open step of the plugin: a tab of the workbench or a dock of its own.

Docks cooperate (Score reads Tune's settings, Export uses Tune's clean-up, Train hands its model to
Inference, Proofread fine-tunes the model behind a prediction). They find each other only through
:func:`find_widget`, whichever way the user opened them.
"""

from __future__ import annotations

from typing import Any, TypeVar

T = TypeVar("T")


def _unwrapped(obj: Any) -> Any:
    """The object itself, not napari's ``PublicOnlyProxy`` of it.

    napari hands a dock widget a proxy of the viewer, and the proxy wraps whatever it returns from a
    module named ``napari*`` (this plugin's too): widgets found through it would be proxies (identity
    checks fail, private attributes warn), so every widget is unwrapped here.
    """
    return getattr(obj, "__wrapped__", obj)


def _docked(viewer: Any) -> list[Any]:
    """The inner widgets of ``viewer``'s docks (a step, a Workbench, another plugin's widget)."""
    window = getattr(viewer, "window", None)
    docks = getattr(window, "dock_widgets", None) if window is not None else None
    found = []
    for widget in (docks or {}).values():
        widget = _unwrapped(widget)
        found.append(_unwrapped(getattr(widget, "_magic_widget", widget)))
    return found


def _is_workbench(widget: Any) -> bool:
    return callable(getattr(widget, "built_steps", None)) and callable(getattr(widget, "find_step", None))


def open_widgets(viewer: Any) -> list[Any]:
    """Every plugin widget open in ``viewer``'s window: docks, and the built tabs of a docked workbench."""
    found: list[Any] = []
    for widget in _docked(viewer):
        if _is_workbench(widget):  # its steps first, in tab order
            found.extend(widget.built_steps())
        found.append(widget)
    return found


def find_widget(viewer: Any, cls: type[T]) -> T | None:
    """The open widget of type ``cls``, or None.

    A widget already built wins (a workbench tab first, then a separate dock); otherwise a docked
    workbench builds its step of that type (a tab not shown yet holds the step's defaults).
    """
    for widget in open_widgets(viewer):
        if isinstance(widget, cls):
            return widget
    for widget in _docked(viewer):
        if _is_workbench(widget):
            step = widget.find_step(cls)
            if step is not None:
                return step
    return None


def show_widget(viewer: Any, widget: Any) -> None:
    """Bring ``widget`` to the front: select its workbench tab, or raise its dock."""
    for docked in _docked(viewer):
        if _is_workbench(docked) and any(step is widget for step in docked.built_steps()):
            docked.show_step(widget)
            widget = docked
            break
    native = getattr(widget, "native", widget)
    # the step's dock: its scroll area's (or the workbench's) parent is napari's dock wrapper
    dock = native.parent() if native is not None else None
    while dock is not None and not hasattr(dock, "setFloating"):
        dock = dock.parent()
    if dock is not None:
        dock.show()
        dock.raise_()
