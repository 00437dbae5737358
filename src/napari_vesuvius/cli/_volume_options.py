"""Command-line options shared by every command that reads or writes volumes (one definition each).

* :func:`add_output_format_options`: ``--zarr-format {2,3}`` for ``.zarr`` / ``.ome.zarr`` outputs (2, the
  ecosystem's format, by default; OME-Zarr 0.4 on 2, 0.5 on 3).
* :func:`add_remote_options`: ``--cache-dir``, ``--retries`` for ``http(s)://`` / ``s3://`` inputs;
  :func:`remote_options_from_args` turns them into :class:`~napari_vesuvius.core.volume.remote.RemoteOptions`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from napari_vesuvius.core.volume.base import DEFAULT_ZARR_FORMAT, ZARR_FORMATS
from napari_vesuvius.core.volume.remote import RetryPolicy


def add_output_format_options(parser: argparse.ArgumentParser) -> None:
    """``--zarr-format``: the zarr format of .zarr / .ome.zarr outputs."""
    parser.add_argument(
        "--zarr-format",
        type=int,
        choices=ZARR_FORMATS,
        default=DEFAULT_ZARR_FORMAT,
        help=(
            f"zarr format of .zarr / .ome.zarr outputs (default {DEFAULT_ZARR_FORMAT}: read by zarr-python "
            "2.x "
            "and the vesuvius library; .ome.zarr is OME-Zarr 0.4 on format 2, 0.5 on format 3)"
        ),
    )


def add_remote_options(parser: argparse.ArgumentParser) -> None:
    """``--cache-dir`` and ``--retries`` for remote (URL) inputs."""
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=None,
        help="keep the chunks read from a URL in this folder, so reading the same region again is local",
    )
    parser.add_argument(
        "--retries",
        type=int,
        default=None,
        help=(
            "tries per remote request on HTTP 429/5xx or timeouts, with exponential backoff "
            f"(default {RetryPolicy.attempts})"
        ),
    )


def remote_options_from_args(args: argparse.Namespace) -> Any:
    """The RemoteOptions of the parsed ``--cache-dir`` / ``--retries`` (defaults when absent)."""
    from napari_vesuvius.core.volume.remote import RemoteOptions

    retries = getattr(args, "retries", None)
    retry = RetryPolicy() if retries is None else RetryPolicy(attempts=max(1, int(retries)))
    return RemoteOptions(retry=retry, cache_dir=getattr(args, "cache_dir", None))
