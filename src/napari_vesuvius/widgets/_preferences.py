"""The plugin's preferences (napari Preferences dialog, manifest ``configurations``), read in one place.

The manifest (``napari.yaml`` › ``configurations``) declares each preference with its title, description
and choices, so napari's Preferences dialog edits them and keeps them in ``<napari config>/napari-vesuvius
.yaml``; :func:`preference` reads them with ``napari.settings.get_plugin_settings``. Widgets take their
*defaults* from it; a value the user changes in a dock is that dock's own setting (``_settings.py``). With
persistence off (tests: ``NAPARI_VESUVIUS_NO_SETTINGS``) or when napari's plugin settings cannot be read,
the built-in defaults below (the same as the manifest's) apply.
"""

from __future__ import annotations

from typing import Any

from napari_vesuvius.widgets._settings import persistence_enabled

PLUGIN = "napari-vesuvius"

#: preference → (manifest configuration section, built-in default)
PREFERENCES: dict[str, tuple[str, Any]] = {
    "device": ("inference", "auto"),
    "precision": ("inference", "auto"),
    "autosave_minutes": ("proofreading", 3.0),
    "runs_folder": ("training", ""),
    "zarr_format": ("volumes", 2),
    "remote_cache_dir": ("volumes", ""),
}


def default(key: str) -> Any:
    """The built-in default of preference ``key``."""
    return PREFERENCES[key][1]


def preference(key: str) -> Any:
    """The user's value of preference ``key`` (napari Preferences › napari-vesuvius), else its default."""
    section, fallback = PREFERENCES[key]
    if not persistence_enabled():
        return fallback
    try:
        from napari.settings import get_plugin_settings

        value = getattr(getattr(get_plugin_settings(PLUGIN), section), key)
    except Exception:  # napari without plugin settings, or none declared: the built-in default
        return fallback
    return fallback if value is None else value


def zarr_format() -> int:
    """The zarr format (2 or 3) of every .zarr / .ome.zarr file a dock writes (preference ``zarr_format``)."""
    from napari_vesuvius.core.volume.base import check_zarr_format

    try:
        return check_zarr_format(int(preference("zarr_format")))
    except (TypeError, ValueError):  # a hand-edited settings file: the default
        return int(default("zarr_format"))
