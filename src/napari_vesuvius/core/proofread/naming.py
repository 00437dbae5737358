"""Names of corrected label files: versions and the autosave file, next to the original labels.

An original ``<stem><ext>`` (``1234.tif``, ``seg.zarr``) gets versions ``<stem>.v001<ext>``,
``<stem>.v002<ext>`` ... and one autosave file ``<stem>.autosave.tif``. The original is never written.
A version of a version belongs to the same family (``1234.v002.tif`` → next is ``1234.v003.tif``).
Dataset folders skip these derived names (:func:`is_derived_name`), so a corrected label never shows
up as an extra volume id.
"""

from __future__ import annotations

import re
from pathlib import Path

#: version files: ``<stem>.v<digits>`` (3 digits, more once past 999)
_VERSION = re.compile(r"^(?P<stem>.+)\.v(?P<number>\d{3,})$")
AUTOSAVE_TAG = "autosave"
_SUFFIXES = (".ome.zarr", ".zarr", ".tiff", ".tif")


def split_name(path: str | Path) -> tuple[str, str]:
    """``(stem, extension)`` of a volume path; ``.ome.zarr`` counts as one extension."""
    name = Path(path).name
    for suffix in _SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix) :]
    return Path(name).stem, Path(name).suffix


def is_derived_name(name: str) -> bool:
    """True for a version (``x.v001.tif``) or autosave (``x.autosave.tif``) file name."""
    stem, _ = split_name(name)
    return bool(_VERSION.match(stem)) or stem.endswith(f".{AUTOSAVE_TAG}")


def family_stem(path: str | Path) -> str:
    """The stem shared by an original and its versions (``1234.v002.tif`` → ``1234``)."""
    stem, _ = split_name(path)
    if stem.endswith(f".{AUTOSAVE_TAG}"):
        stem = stem[: -len(AUTOSAVE_TAG) - 1]
    match = _VERSION.match(stem)
    return match.group("stem") if match else stem


def _is_autosave(path: Path) -> bool:
    stem, _ = split_name(path)
    return stem.endswith(f".{AUTOSAVE_TAG}")


def version_number(path: str | Path) -> int | None:
    """The version of a version file, None for anything else."""
    match = _VERSION.match(split_name(path)[0])
    return int(match.group("number")) if match else None


def version_path(original: str | Path, number: int, ext: str | None = None) -> Path:
    """``<stem>.v{number:03d}<ext>`` next to ``original`` (``ext`` defaults to the original's)."""
    original = Path(original)
    if number < 1:
        raise ValueError(f"version numbers start at 1, got {number}")
    ext = split_name(original)[1] if ext is None else ext
    return original.with_name(f"{family_stem(original)}.v{number:03d}{ext}")


def list_versions(original: str | Path) -> list[Path]:
    """Existing versions of ``original``'s family (any extension), oldest first; hidden files skipped."""
    original = Path(original)
    folder, stem = original.parent, family_stem(original)
    if not folder.is_dir():
        return []
    found: list[tuple[int, Path]] = []
    for entry in folder.iterdir():
        if entry.name.startswith("."):
            continue
        if family_stem(entry) != stem or _is_autosave(entry):
            continue
        number = version_number(entry)
        if number is not None:
            found.append((number, entry))
    return [path for _, path in sorted(found)]


def latest_version(original: str | Path) -> Path | None:
    """The highest existing version of the family, None when there is none yet."""
    versions = list_versions(original)
    return versions[-1] if versions else None


def next_version_path(original: str | Path, ext: str | None = None) -> Path:
    """The first version after every existing one (never an existing path)."""
    latest = latest_version(original)
    number = 1 if latest is None else int(version_number(latest) or 0) + 1
    return version_path(original, number, ext)


def autosave_path(original: str | Path) -> Path:
    """``<stem>.autosave.tif`` next to ``original`` (a TIFF whatever the original's format)."""
    original = Path(original)
    return original.with_name(f"{family_stem(original)}.{AUTOSAVE_TAG}.tif")
