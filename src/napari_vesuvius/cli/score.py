"""``napari-vesuvius score PRED LABEL``: the leaderboard score of predictions against labels.

PRED and LABEL are two volumes (.tif/.tiff or zarr) or two folders; folders are paired by name
(``<id>.tif`` in PRED with ``<id>.tif``/``.tiff``/``.zarr`` in LABEL, or in LABEL/train_labels for a
challenge dataset folder). Every prediction needs a label; labels without a prediction are skipped.

Inputs are checked like ``export`` checks them: a prediction must be a 0/1 mask (bool or integer;
float probabilities and 0/255 masks are refused with a hint), a label holds only 0, 1 and 2, and a
block-wise output left incomplete by an interrupted run is refused. Volumes are read block by block and
only the foreground box is held; ``--memory-limit`` (default: the available memory) caps the estimate.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.metric.memory import MEMORY_LIMIT_ENV, parse_bytes
from napari_vesuvius.core.metric.score import TOPO_BACKENDS, ScoreResult, ScoreSummary, score_volume
from napari_vesuvius.core.progress import ConsoleProgress, Progress, run_job
from napari_vesuvius.core.volume.io import TIFF_SUFFIXES, is_zarr_path, open_array
from napari_vesuvius.core.volume.io import volume_id as path_id


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "score",
        help="leaderboard score (TopoScore, SurfaceDice, VOI) of predictions against labels",
        description="Score PRED against LABEL: two volumes, or two folders of <id>.tif paired by name.",
    )
    parser.add_argument("pred", help="prediction volume (.tif/.tiff/zarr) or folder of them")
    parser.add_argument("label", help="label volume or folder (or a challenge dataset folder)")
    parser.add_argument("--json", action="store_true", help="one JSON object per volume, then the mean")
    parser.add_argument(
        "--topo-backend",
        choices=TOPO_BACKENDS,
        default="auto",
        help="Betti matching implementation: ours (native/auto) or the reference betti_matching module",
    )
    parser.add_argument("--tolerance", type=float, default=2.0, help="SurfaceDice tolerance in voxels")
    parser.add_argument(
        "--memory-limit",
        type=_memory_limit,
        default=None,
        metavar="SIZE",
        help="refuse a volume whose estimated peak memory exceeds SIZE (e.g. 8G, 512M; default: "
        f"${MEMORY_LIMIT_ENV} or the available memory)",
    )
    parser.set_defaults(func=run)


def _memory_limit(text: str) -> int:
    try:
        return parse_bytes(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from error


def _is_volume_path(path: Path) -> bool:
    return (path.is_file() and path.suffix.lower() in TIFF_SUFFIXES) or is_zarr_path(path)


def _volumes_in(folder: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if _is_volume_path(path) and not path.name.startswith("."):
            found.setdefault(path_id(path), path)
    return found


def find_pairs(pred: str | Path, label: str | Path) -> list[tuple[str, Path, Path]]:
    """``(id, prediction, label)`` triples for two volumes or two folders paired by name."""
    pred, label = Path(pred), Path(label)
    for path in (pred, label):
        if not path.exists():
            raise VolumeError(path, "file not found")
    if _is_volume_path(pred):
        if not _is_volume_path(label):
            raise VolumeError(
                label, "expected a label volume (.tif/.tiff/zarr) to go with a prediction volume"
            )
        return [(path_id(pred), pred, label)]
    if not pred.is_dir():
        raise VolumeError(pred, "not a .tif/.tiff file, zarr array or folder of them")
    if not label.is_dir() or _is_volume_path(label):
        raise VolumeError(label, "expected a folder of labels to go with a folder of predictions")
    if (label / "train_labels").is_dir():
        label = label / "train_labels"
    predictions = _volumes_in(pred)
    if not predictions:
        raise VolumeError(pred, "no prediction volumes (.tif/.tiff/zarr) in this folder")
    labels = _volumes_in(label)
    pairs = []
    for volume_id, pred_path in predictions.items():
        if volume_id not in labels:
            raise VolumeError(label, f"no label for prediction {pred_path.name} (expected {volume_id}.tif)")
        pairs.append((volume_id, pred_path, labels[volume_id]))
    return pairs


def iter_score_files(
    pairs: list[tuple[str, Path, Path]],
    *,
    tolerance: float = 2.0,
    topo_backend: str = "auto",
    memory_limit: int | str | None = None,
) -> Iterator[Progress]:
    """Job generator scoring file pairs one at a time (validated, see the module docstring); returns a
    ScoreSummary. Errors name the file at fault."""
    ids: list[str] = []
    results: list[ScoreResult] = []
    yield Progress(0, len(pairs), "scoring")
    for done, (volume_id, pred_path, label_path) in enumerate(pairs, start=1):
        with open_array(pred_path) as pred, open_array(label_path) as label:
            result = score_volume(
                pred,
                label,
                tolerance=tolerance,
                topo_backend=topo_backend,
                memory_limit=memory_limit,
                names=(pred_path, label_path),
            )
        ids.append(volume_id)
        results.append(result)
        yield Progress(done, len(pairs), f"{volume_id}: {result.score:.4f}")
    return ScoreSummary(ids=ids, results=results)


def _f1_text(result: ScoreResult) -> str:
    return "/".join("-" if result.topo_f1.get(k) is None else f"{result.topo_f1[k]:.2f}" for k in (0, 1, 2))


def format_table(summary: ScoreSummary) -> str:
    """Human-readable breakdown: one row per volume, the mean, and TopoScore counts per dimension."""
    width = max([len("mean"), *(len(i) for i in summary.ids)])
    header = f"{'id':<{width}}  score   topo    SD      VOI     split   merge   F1 k0/k1/k2     time"
    lines = [header, "-" * len(header)]

    def row(name: str, values: dict[str, Any], f1: str, seconds: str) -> str:
        terms = "  ".join(
            f"{values[k]:.4f}"
            for k in ("score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge")
        )
        return f"{name:<{width}}  {terms}  {f1:<14} {seconds}".rstrip()

    for volume_id, result in zip(summary.ids, summary.results, strict=True):
        lines.append(row(volume_id, result.to_dict(), _f1_text(result), f"{result.timings['total']:.1f}s"))
    if len(summary.results) > 1:
        lines.append(row("mean", summary.mean, "", ""))
    counts = summary.mean["topo_counts"]
    label = "TopoScore counts" + (" (summed over volumes)" if len(summary.results) > 1 else "")
    lines.append(
        f"{label}: " + "  ".join(f"dim {k}: m={c['m']} p={c['p']} g={c['g']}" for k, c in counts.items())
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    pairs = find_pairs(args.pred, args.label)
    job = iter_score_files(
        pairs, tolerance=args.tolerance, topo_backend=args.topo_backend, memory_limit=args.memory_limit
    )
    on_progress = ConsoleProgress("score") if len(pairs) > 1 and sys.stderr.isatty() else None
    summary: ScoreSummary = run_job(job, on_progress)
    if args.json:
        for volume_id, result in zip(summary.ids, summary.results, strict=True):
            print(json.dumps({"id": volume_id, **result.to_dict()}))
        print(json.dumps({"id": "mean", "n_volumes": len(summary.results), **summary.mean}))
    else:
        print(format_table(summary))
    return 0
