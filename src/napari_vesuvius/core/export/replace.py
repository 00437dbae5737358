"""Replacing an existing ``submission.zip``: which ids it holds, and what a replacement would change.

The Export widget asks before it replaces a zip whose id set differs from the new run's (a zip for
another test set, or one holding outputs by mistake); with the same ids it replaces without asking.
Either way the zip is only ever swapped in atomically once complete (:class:`.writer.SubmissionWriter`).
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterable
from pathlib import Path

from ..dataset import _id_list

__all__ = ["replace_question", "submission_ids"]


def submission_ids(path: str | Path) -> set[str] | None:
    """The ids (``<id>.tif`` entries) of the zip at ``path``; None when it cannot be read as a zip.

    Reads the zip's directory only (no mask is decoded). Entries that are not ``.tif`` count under
    their full name, so a zip holding other files never looks like a valid submission.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (OSError, zipfile.BadZipFile, ValueError):
        return None
    return {name[: -len(".tif")] if name.lower().endswith(".tif") else name for name in names}


def replace_question(out: str | Path, old: set[str] | None, new: Iterable[str]) -> str | None:
    """The question to ask before replacing ``out`` (holding ``old`` ids) with ``new`` ids; None when
    the id sets are equal (replacing needs no question)."""
    new_set = {str(vid) for vid in new}
    if old is not None and old == new_set:
        return None
    name = Path(out).name
    if old is None:
        what = f"{out} exists but is not a readable zip."
    else:
        dropped, added = old - new_set, new_set - old
        parts = []
        if dropped:
            parts.append(f"{len(dropped):,} id(s) it holds are not in this test set ({_id_list(dropped, 8)})")
        if added:
            parts.append(f"{len(added):,} test id(s) are not in it ({_id_list(added, 8)})")
        what = f"{out} holds {len(old):,} id(s), this run writes {len(new_set):,}: " + "; ".join(parts) + "."
    return f"{what}\n\nReplace {name} with the new submission?"
