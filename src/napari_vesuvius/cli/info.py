"""``napari-vesuvius info PATH``: shape, dtype, chunks and label counts of a volume, or a dataset summary.

For a dataset folder it also checks every volume (:mod:`napari_vesuvius.core.dataset_check`: headers,
then a streamed check of label values and of NaN/Inf in float images; ``--no-counts``: headers only)
and exits with 1 when any file is missing or bad, listing them all.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from napari_vesuvius.cli._volume_options import add_remote_options, remote_options_from_args
from napari_vesuvius.core.dataset import is_dataset_folder
from napari_vesuvius.core.dataset_check import format_problems, iter_check_dataset
from napari_vesuvius.core.labels import VALID_LABEL_VALUES
from napari_vesuvius.core.progress import ConsoleProgress, run_job
from napari_vesuvius.core.scroll.record import RESUME_HINT, output_progress
from napari_vesuvius.core.volume.io import describe, is_label_volume, iter_label_counts, open_volume
from napari_vesuvius.core.volume.remote import RemoteOptions, is_url


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("info", help="describe a volume (shape, dtype, chunks, label counts)")
    parser.add_argument(
        "path",
        help=(
            "a .tif/.tiff file, a folder of 2D TIFF slices, a zarr/OME-Zarr volume (a path or an "
            "http(s):// / s3:// URL) or dataset folder"
        ),
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    counts = parser.add_mutually_exclusive_group()
    counts.add_argument("--counts", action="store_true", help="always count voxels per value (reads it all)")
    counts.add_argument(
        "--no-counts",
        action="store_true",
        help="never count voxels per value (for a dataset folder: check the file headers only)",
    )
    add_remote_options(parser)
    parser.set_defaults(func=run)


def volume_info(
    path: str | Path,
    *,
    counts: bool | None = None,
    progress: bool = False,
    remote: RemoteOptions | None = None,
) -> dict[str, Any]:
    """Describe a volume; ``counts`` None = count values only when it looks like a label volume.
    ``remote``: retries and chunk cache of a URL (its counters are in ``info["remote"]``)."""
    with open_volume(path, allow_incomplete=True, remote=remote) as volume:
        info = describe(volume)
        info["multiscale"] = volume.multiscale
        info["placement"] = volume.spatial.describe()
        local_zarr = volume.kind not in ("tiff", "tiff-folder") and not is_url(volume.path)
        progress = output_progress(volume.path) if local_zarr else None
        if progress is not None:  # an interrupted block-wise output: describe it, say so
            info["incomplete"] = {"blocks_done": progress[0], "blocks_total": progress[1]}
        looks_like_labels = is_label_volume(volume.path, volume.levels[-1])
        info["labels"] = looks_like_labels
        if counts or (counts is None and looks_like_labels):
            on_progress = ConsoleProgress("counting") if progress else None
            values = run_job(iter_label_counts(volume.data), on_progress)
            info["counts"] = {str(value): count for value, count in values.items()}
            info["valid_labels"] = all(value in VALID_LABEL_VALUES for value in values)
        if volume.remote is not None:  # the counters after the counting reads too
            info["remote"] = volume.remote.to_dict()
    return info


def dataset_info(path: str | Path, *, values: bool = True, progress: bool = False) -> dict[str, Any]:
    """Summary of a challenge dataset folder, its warnings and every missing or bad file (``problems``).

    ``values`` False checks the headers only (no voxel data read).
    """
    on_progress = ConsoleProgress("checking") if progress else None
    dataset, problems = run_job(iter_check_dataset(path, values=values), on_progress)
    return {
        **dataset.summary(),
        "kind": "dataset",
        "checked": "headers and values" if values else "headers",
        "problems": problems,
        "warnings": list(dataset.warnings),
    }


def _print_volume(info: dict[str, Any]) -> None:
    print(f"path:   {info['path']}")
    print(f"kind:   {info['kind']}{' (labels)' if info['labels'] else ''}")
    print(f"shape:  {tuple(info['shape'])}  dtype: {info['dtype']}  chunks: {tuple(info['chunks'])}")
    print(f"scale:  {info['placement']}")
    for note in info.get("notes", []):
        print(f"note:   {note}")
    if "incomplete" in info:
        done, total = info["incomplete"]["blocks_done"], info["incomplete"]["blocks_total"]
        print(f"incomplete: {done} of {total} blocks done (interrupted block-wise run; {RESUME_HINT})")
    if info["multiscale"]:
        for index, level in enumerate(info["levels"]):
            voxel = " × ".join(f"{value:g}" for value in level["scale"])
            shape, chunks = tuple(level["shape"]), tuple(level["chunks"])
            print(f"level {index}: shape {shape}  chunks {chunks}  voxel {voxel}")
    if "remote" in info:
        remote = info["remote"]
        print(
            f"remote: {remote['requests']} requests, {remote['retries']} retries, "
            f"{remote['bytes_fetched']} bytes fetched, cache {remote['cache_hits']} hits / "
            f"{remote['cache_misses']} misses"
        )
    if "counts" in info:
        total = sum(info["counts"].values()) or 1
        for value, count in info["counts"].items():
            print(f"value {value:>4}: {count:>12} voxels ({100 * count / total:5.1f}%)")
        if not info["valid_labels"]:
            print("warning: values outside {0, 1, 2} (not a valid challenge label volume)")


def _print_dataset(info: dict[str, Any]) -> None:
    print(f"dataset: {info['path']}")
    print(f"train ids: {info['train']} ({info['labelled']} with labels)  test ids: {info['test']}")
    scrolls = ", ".join(f"{scroll}: {count}" for scroll, count in info["scrolls"].items())
    print(f"scrolls: {len(info['scrolls'])} ({scrolls})")
    bad = len(info["problems"])
    print(f"checked ({info['checked']}): " + (f"{bad} bad or missing file(s)" if bad else "no problems"))


def run(args: argparse.Namespace) -> int:
    path: str | Path = args.path if is_url(args.path) else Path(args.path)
    if not is_url(path) and is_dataset_folder(path):
        info = dataset_info(path, values=not args.no_counts, progress=not args.json and sys.stderr.isatty())
        if args.json:
            print(json.dumps(info, indent=2))
        else:
            _print_dataset(info)
        if info["problems"]:
            print(f"error: {format_problems(path, info['problems'])}", file=sys.stderr)
            return 1
        return 0
    counts = True if args.counts else (False if args.no_counts else None)
    remote = remote_options_from_args(args)
    info = volume_info(path, counts=counts, progress=not args.json and sys.stderr.isatty(), remote=remote)
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        _print_volume(info)
    return 0
