"""Widget settings that persist between napari sessions (QSettings), switchable off for tests.

Persistence is on unless the environment variable ``NAPARI_VESUVIUS_NO_SETTINGS`` is set (the test
suite sets it) or a widget is built with ``persist=False``.
"""

from __future__ import annotations

import contextlib
import json
import os
from typing import Any

from magicgui.widgets import Container

ORGANIZATION = "napari-vesuvius"
DISABLE_ENV = "NAPARI_VESUVIUS_NO_SETTINGS"


def persistence_enabled() -> bool:
    return not os.environ.get(DISABLE_ENV)


class WidgetSettings:
    """Key/value settings of one widget, stored as JSON strings under ``<group>/<key>``."""

    def __init__(self, group: str, enabled: bool | None = None) -> None:
        self.group = group
        self.enabled = persistence_enabled() if enabled is None else enabled
        self._store: Any = None
        if self.enabled:
            from qtpy.QtCore import QSettings

            self._store = QSettings(ORGANIZATION, ORGANIZATION)

    def get(self, key: str, default: Any = None) -> Any:
        if self._store is None:
            return default
        raw = self._store.value(f"{self.group}/{key}", None)
        if raw is None:
            return default
        try:
            return json.loads(raw)
        except (TypeError, ValueError):
            return default

    def set(self, key: str, value: Any) -> None:
        if self._store is None:
            return
        try:
            self._store.setValue(f"{self.group}/{key}", json.dumps(value))
        except TypeError:  # not JSON-serialisable (e.g. a layer): not a setting
            return

    def bind(self, container: Container, names: list[str]) -> None:
        """Restore the named sub-widgets' values now and save them whenever they change."""
        for name in names:
            widget = getattr(container, name)
            stored = self.get(name, None)
            if stored is not None:
                # a stale setting (e.g. a choice that no longer exists) is ignored
                with contextlib.suppress(ValueError, TypeError):
                    widget.value = stored
            widget.changed.connect(lambda value, key=name: self.set(key, _jsonable(value)))


def _jsonable(value: Any) -> Any:
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, tuple):
        return list(value)
    return value
