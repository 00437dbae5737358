"""``napari-vesuvius predict``: sliding-window surface probability of one volume or a folder of volumes.

``--input`` is a volume (``.tif``/``.zarr``, a folder of 2D TIFF slices) → ``--output`` file (format
by extension: ``.tif``, plain ``.zarr``, or ``.ome.zarr`` with a pyramid; zarr format 2 unless
``--zarr-format 3``), or a folder of volumes (challenge dataset folder → its ``test_images/`` by
default, or any folder of 3D TIFFs such as ``test_images/``) → ``--output`` folder with one
``<id>.tif`` (or ``.zarr``) per volume. Every output keeps its input's physical scale, origin and unit.

Full scrolls (``--distributed``, implied by ``--workers``, ``--scheduler``, ``--block-size`` or a URL):
a zarr / OME-Zarr input of any size (path or fsspec URL) is predicted block by block on a dask cluster
into a uint8 ``.zarr`` (``.ome.zarr`` or ``--ome-zarr``: with a pyramid). Re-running the same command
resumes an interrupted run; different settings are refused (``--overwrite`` starts again).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_vesuvius.cli._intensity_check import add_intensity_check_argument, references, warn_intensity
from napari_vesuvius.cli._volume_options import (
    add_output_format_options,
    add_remote_options,
    remote_options_from_args,
)
from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.inference.settings import add_settings_arguments, parse_tta, settings_from_args

__all__ = ["parse_tta", "register", "run"]

TIFF_SUFFIXES = (".tif", ".tiff")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="surface probability of a volume or a folder of volumes (sliding window)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="PATH",
        help="built-in checkpoint (.pt) or nnU-Net trained model folder; repeat to ensemble",
    )
    parser.add_argument(
        "--weights", type=float, nargs="+", metavar="W", help="ensemble weight per --model (default: equal)"
    )
    parser.add_argument(
        "--input", required=True, help="volume (.tif/.zarr/2D-slice folder), folder of volumes, or a zarr URL"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="output .tif/.zarr/.ome.zarr (folder mode: a folder; block-wise: .zarr/.ome.zarr or URL)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "train", "all"),
        default="test",
        help="which images of a challenge dataset folder (default: test)",
    )
    parser.add_argument(
        "--format",
        choices=("tif", "zarr", "ome.zarr"),
        default="tif",
        help="file type in folder mode (ome.zarr: an OME-Zarr pyramid per volume)",
    )
    parser.add_argument("--folds", nargs="+", metavar="FOLD", help="nnU-Net folds to ensemble (default: all)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth", help="nnU-Net checkpoint file name")
    add_settings_arguments(parser, output_dtype=True)
    add_output_format_options(parser)
    add_remote_options(parser)
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_intensity_check_argument(parser)
    scroll = parser.add_argument_group("full scrolls (block-wise on a dask cluster, resumable)")
    scroll.add_argument(
        "--distributed",
        action="store_true",
        help="predict a zarr/OME-Zarr input block by block on a dask cluster",
    )
    scroll.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="workers of the local cluster (default: one per GPU, else cores/4)",
    )
    scroll.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        help="use this dask scheduler (e.g. tcp://host:8786) instead of a local cluster",
    )
    scroll.add_argument(
        "--block-size",
        type=int,
        metavar="N",
        help="block edge in voxels, a multiple of --chunk-size (default: 8 patches, 256-512)",
    )
    scroll.add_argument(
        "--chunk-size",
        type=int,
        default=128,
        metavar="N",
        help="output chunk edge (default 128: 2 MB uint8 chunks)",
    )
    scroll.add_argument(
        "--ome-zarr",
        action="store_true",
        help="write an OME-Zarr pyramid (implied by an output ending in .ome.zarr)",
    )
    parser.set_defaults(func=run)


def _open(path: Path) -> Any:
    """The volume as a lazy (dask) array, through core.volume.io."""
    from napari_vesuvius.core.volume.io import open_volume

    return open_volume(path)


def _jobs(args: argparse.Namespace) -> list[tuple[str, Path, Path]]:
    """(id, input, output) for every volume to predict."""
    source, target = Path(args.input), Path(args.output)
    if not source.exists():
        raise VolumeError(source, "input not found")
    from napari_vesuvius.core.volume.io import is_zarr_path, volume_id
    from napari_vesuvius.core.volume.tiff_folder import is_slice_folder

    if source.is_file() or is_zarr_path(source) or is_slice_folder(source):  # one volume
        if target.suffix.lower() not in (*TIFF_SUFFIXES, ".zarr"):
            raise VolumeError(target, "output must end in .tif, .tiff, .zarr or .ome.zarr")
        return [(volume_id(source), source, target)]
    from napari_vesuvius.core.dataset import ChallengeDataset, is_dataset_folder

    if is_dataset_folder(source):
        dataset = ChallengeDataset.open(source)
        ids = {"test": dataset.test_ids, "train": dataset.train_ids, "all": dataset.ids}[args.split]
        inputs = [(i, dataset.image_path(i)) for i in ids]
        inputs = [(i, p) for i, p in inputs if p.exists()]
    else:
        inputs = sorted(
            (volume_id(p), p)
            for p in source.iterdir()
            if p.suffix.lower() in TIFF_SUFFIXES or is_zarr_path(p)
        )
    if not inputs:
        raise VolumeError(source, f"no volumes found (looked for {args.split} images / .tif / .zarr)")
    if target.exists() and not target.is_dir():
        raise VolumeError(target, "folder mode needs an output folder, but this is a file")
    return [(vid, path, target / f"{vid}.{args.format}") for vid, path in inputs]


def _check_outputs(args: argparse.Namespace, jobs: list[tuple[str, Path, Path]]) -> None:
    """Refuse outputs that are inputs or exist (without --overwrite) before any work; make the folder."""
    from napari_vesuvius.core.outputs import check_output_folder, check_output_path

    inputs = [args.input, *args.model]
    folder = Path(args.output)
    created = False
    if len(jobs) != 1 or jobs[0][1] != Path(args.input):  # folder mode
        names = [target.name for _, _, target in jobs]
        check_output_folder(folder, inputs=[*inputs, *(source for _, source, _ in jobs)], writes=names)
        created = not folder.exists()
        folder.mkdir(parents=True, exist_ok=True)
    try:
        for _, source, target in jobs:
            check_output_path(target, inputs=[*inputs, source], overwrite=args.overwrite)
    except BaseException:
        if created:
            folder.rmdir()
        raise


def _predict_one(args: argparse.Namespace, models: Any, source: Path, target: Path, label: str) -> Any:
    from napari_vesuvius.core.inference.engine import predict_volume
    from napari_vesuvius.core.progress import ConsoleProgress, run_job

    volume = _open(source)
    settings = settings_from_args(args)
    progress = None if args.quiet else ConsoleProgress(label)
    try:
        warn_intensity(args, models, volume, str(source))
        if target.suffix.lower() == ".zarr":
            from napari_vesuvius.core.inference.outputs import create_prediction_output

            # an existing target (allowed by --overwrite) stays until the new store is in place
            inputs = [args.input, *args.model, source]
            with create_prediction_output(
                target, volume.shape, settings.output_dtype, inputs=inputs, overwrite=args.overwrite,
                zarr_format=args.zarr_format, spatial=volume.spatial,
            ) as pending:  # fmt: skip
                job = predict_volume(volume.data, models, settings=settings, output=pending.array)
                result = run_job(job, progress)
                pyramid = None if args.quiet or not pending.ome else ConsoleProgress(f"{label} pyramid")
                run_job(pending.iter_publish(), pyramid)  # .ome.zarr: the pyramid, then the swap
        else:
            from napari_vesuvius.core.volume.io import write_volume

            result = run_job(predict_volume(volume.data, models, settings=settings), progress)
            write_volume(target, result.probability, spatial=volume.spatial)
    finally:
        volume.close()
    return result


def _block_wise(args: argparse.Namespace) -> bool:
    """The full-scroll path: asked for, implied by a cluster option, or needed for a URL."""
    from napari_vesuvius.core.scroll import is_url

    implied = args.workers is not None or args.scheduler or args.block_size is not None
    return bool(args.distributed or implied or is_url(args.input) or is_url(args.output))


def _predict_scroll(args: argparse.Namespace, folds: tuple[int | str, ...] | None) -> int:
    """Block-wise prediction of one zarr volume on a dask cluster (see the module docstring)."""
    from napari_vesuvius.core.inference.models import model_specs
    from napari_vesuvius.core.progress import ConsoleProgress, run_job
    from napari_vesuvius.core.scroll import is_url, predict_scroll

    if args.dtype not in (None, "uint8"):
        raise VolumeError(args.output, f"block-wise outputs are uint8 0-255 (got --dtype {args.dtype})")
    if not is_url(args.output) and not args.output.rstrip("/").lower().endswith(".zarr"):
        raise VolumeError(args.output, "block-wise output must be a .zarr / .ome.zarr folder or a zarr URL")
    if not is_url(args.output):  # an existing output is resumed (or replaced with --overwrite)
        from napari_vesuvius.core.outputs import refuse_inputs

        refuse_inputs(args.output, [None if is_url(args.input) else args.input, *args.model])
    specs = model_specs(args.model, args.weights, folds, args.checkpoint)
    if getattr(args, "intensity_check", True):
        remote = remote_options_from_args(args)
        warn_intensity(args, references(args.model), args.input, str(args.input), remote=remote)
    ome = args.ome_zarr or args.output.rstrip("/").lower().endswith(".ome.zarr")
    job = predict_scroll(
        args.input, args.output, specs, settings_from_args(args, output_dtype="uint8"),
        scheduler=args.scheduler, workers=args.workers, block_size=args.block_size,
        chunk_size=args.chunk_size, ome=ome, overwrite=args.overwrite, zarr_format=args.zarr_format,
        remote=remote_options_from_args(args),
    )  # fmt: skip
    result = run_job(job, None if args.quiet else ConsoleProgress("blocks"))
    state = "complete" if result.complete else "INCOMPLETE (run the same command again to resume)"
    print(
        f"{result.output}: {state}; {result.blocks_total} blocks, {result.blocks_before} done before, "
        f"{result.blocks_computed} computed, {result.blocks_air} air in {result.elapsed_s:.1f}s "
        f"on {result.workers} worker(s): {result.voxels_per_s / 1e6:.2f} Mvox/s "
        f"({result.compute_voxels_per_s / 1e6:.2f} Mvox/s non-air), tiles run {result.tiles_run} "
        f"(recompute ×{result.recompute:.2f}), worker RSS ≤ {result.max_worker_rss_mb:.0f} MiB",
        file=sys.stderr if args.quiet else sys.stdout,
    )
    return 0


def run(args: argparse.Namespace) -> int:
    from napari_vesuvius.core.heap import keep_freed_memory
    from napari_vesuvius.core.inference.models import load_models, model_specs, parse_folds

    if args.weights is not None and len(args.weights) != len(args.model):
        problem = f"--weights needs one value per --model ({len(args.model)}), got {len(args.weights)}"
        raise VolumeError(None, problem)
    settings_from_args(args)  # a bad --step / --batch-size is refused before anything is read
    folds = parse_folds(args.folds)
    if _block_wise(args):
        return _predict_scroll(args, folds)
    # this process exists for the run: tile threads reuse freed activations (core/heap.py)
    keep_freed_memory(single_arena=True)
    jobs = _jobs(args)
    _check_outputs(args, jobs)
    models = load_models(model_specs(args.model, args.weights, folds, args.checkpoint))
    for index, (vid, source, target) in enumerate(jobs, 1):
        label = f"{vid} ({index}/{len(jobs)})" if len(jobs) > 1 else vid
        result = _predict_one(args, models, source, target, label)
        print(
            f"{vid}: wrote {target} in {result.elapsed_s:.1f}s "
            f"({result.voxels_per_s / 1e6:.2f} Mvox/s, tiles run {result.tiles_run}, "
            f"skipped {result.tiles_skipped}, {result.settings['device']} {result.settings['precision']})",
            file=sys.stderr if args.quiet else sys.stdout,
        )
    return 0
