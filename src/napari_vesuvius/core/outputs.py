"""Output paths: never write onto an input, never replace an existing output without being asked.

Every command and widget that writes checks its outputs here, before any expensive work:

* :func:`check_output_path` for a file or zarr store that is created or replaced as a whole: refused
  when it is one of the inputs, lies inside an input zarr store or contains an input (always, even with
  overwrite), when it exists and ``overwrite`` is false, when it is a folder that is not a zarr store
  (never deleted, even with overwrite), and when its folder is missing, not a folder or not writable;
* :func:`check_output_folder` for a folder that receives files (predict's folder mode, a run folder, the
  demo's work folder): refused when it is a file, an input folder, inside an input store, or when one of
  the files it will write is an input.

Paths are compared after resolving ``~``, ``..`` and symbolic links (and with ``os.path.samefile`` when
both exist), so a link to the input, or the input reached another way, is still the input. URLs are not
checked here (the block-wise scroll run checks its own locations). :func:`os_error_message` words an
``OSError`` as ``<path>: <problem>`` for the CLI and the widgets.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import OutputError

PathLike = str | Path
OVERWRITE_HINT = "use --overwrite to replace it"


def resolve(path: PathLike) -> Path:
    """``path`` made absolute, with ``~``, ``..`` and every symbolic link resolved (it need not exist)."""
    return Path(path).expanduser().resolve()


def _local_path(given: PathLike) -> Path | None:
    """The resolved local path of an input (``file://`` URLs included); None for a remote URL, which no
    local output can be."""
    from napari_vesuvius.core.volume.remote import is_url

    text = str(given)
    if text.lower().startswith("file://"):
        return resolve(text[len("file://") :])
    return None if is_url(text) else resolve(text)


def _is_store(path: Path) -> bool:
    from napari_vesuvius.core.volume.io import is_zarr_path

    return is_zarr_path(path)


def _same(a: Path, b: Path) -> bool:
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(child: Path, parent: Path) -> bool:
    return child != parent and child.is_relative_to(parent)


def _store_root(path: Path) -> Path:
    """The outermost zarr store holding ``path`` (an array inside a group is part of the group)."""
    root = path
    for parent in path.parents:
        if not _is_store(parent):
            break
        root = parent
    return root


def _real_inputs(inputs: Iterable[PathLike | None]) -> list[tuple[PathLike, Path]]:
    pairs = [(given, _local_path(given)) for given in inputs if given is not None]
    return [(given, path) for given, path in pairs if path is not None]


def refuse_inputs(output: PathLike, inputs: Iterable[PathLike | None], *, whole: bool = True) -> None:
    """Raise :class:`OutputError` when ``output`` is an input, lies inside an input zarr store, or
    (``whole``: the output is replaced as a whole) contains an input."""
    out = resolve(output)
    for given, path in _real_inputs(inputs):
        if _same(out, path):
            which = "an input" if str(given) == str(output) else f"the input {given}"
            raise OutputError(output, f"is {which} of this command: refusing to write over it")
        root = _store_root(path)
        if root != path and _same(out, root):
            raise OutputError(output, f"holds the input {given}: refusing to write over an input")
        if _is_store(root) and _inside(out, root):
            raise OutputError(output, f"lies inside the input {given}: refusing to write into an input")
        if whole and _inside(path, out):
            raise OutputError(output, f"contains the input {given}: refusing to write over an input")


def check_output_path(
    output: PathLike,
    *,
    inputs: Iterable[PathLike | None] = (),
    overwrite: bool = False,
    hint: str = OVERWRITE_HINT,
) -> Path:
    """Check a file or zarr store about to be written (see the module docstring); returns it as a Path.

    ``inputs``: every path the command reads (None entries are skipped). ``hint``: how the user asks
    for an existing output to be replaced (the CLI's ``--overwrite``, a widget's check box).
    """
    path = Path(output)
    refuse_inputs(path, inputs)
    if os.path.lexists(path):
        if path.is_dir() and not path.is_symlink() and not _is_store(path):
            raise OutputError(path, "is a folder that is not a zarr store: not replacing it")
        if not overwrite:
            raise OutputError(path, f"exists ({hint})")
    _check_parent(path)
    return path


def check_output_folder(
    folder: PathLike, *, inputs: Iterable[PathLike | None] = (), writes: Iterable[str] = ()
) -> Path:
    """Check a folder that files are written into (created when missing); returns it as a Path.

    ``writes``: names of the files the command writes in it, none of which may be an input.
    """
    path = Path(folder)
    if os.path.lexists(path) and not path.is_dir():
        raise OutputError(path, "exists and is not a folder")
    given = list(inputs)
    refuse_inputs(path, given, whole=False)
    for name in writes:
        refuse_inputs(path / name, given, whole=False)
    if not path.exists():
        ancestor = next((p for p in resolve(path).parents if p.exists()), None)
        if ancestor is not None and not ancestor.is_dir():
            raise OutputError(path, f"{ancestor} is a file, not a folder")
    elif not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(path, "the folder is not writable (permission denied)")
    return path


def _check_parent(path: Path) -> None:
    parent = resolve(path).parent
    if not parent.exists():
        ancestor = next((p for p in parent.parents if p.exists()), None)
        if ancestor is not None and not ancestor.is_dir():
            raise OutputError(path, f"{ancestor} is a file, not a folder")
        raise OutputError(path, "parent folder does not exist")
    if not parent.is_dir():
        raise OutputError(path, f"{parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(path, "the folder it goes in is not writable (permission denied)")


def os_error_message(error: OSError) -> str:
    """``<path>: <problem>`` (``<path> -> <path2>: ...`` for a rename) without errno noise."""
    problem = error.strerror or str(error) or type(error).__name__
    if error.filename is None:
        return problem
    where = str(error.filename)
    if error.filename2 is not None:
        where += f" -> {error.filename2}"
    return f"{where}: {problem}"
