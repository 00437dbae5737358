"""Shared pytest configuration: widget settings never persist during tests."""

from __future__ import annotations

import os

os.environ.setdefault("NAPARI_VESUVIUS_NO_SETTINGS", "1")
