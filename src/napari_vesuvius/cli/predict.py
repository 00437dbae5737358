"""``napari-vesuvius predict``: sliding-window surface probability of one volume or a folder of volumes.

``--input`` is a volume (``.tif``/``.zarr``) → ``--output`` file (format by extension), or a folder
(challenge dataset folder → its ``test_images/`` by default, or any folder of TIFFs such as
``test_images/``) → ``--output`` folder with one ``<id>.tif`` (or ``.zarr``) per volume.

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

from napari_vesuvius.core.errors import VolumeError

TIFF_SUFFIXES = (".tif", ".tiff")


def parse_tta(text: str) -> tuple[int, ...]:
    """``"all"`` → (0, 1, 2); ``"none"``/``""`` → (); ``"0,2"`` → (0, 2)."""
    text = text.strip().lower()
    if text in ("all", "xyz", "zyx"):
        return (0, 1, 2)
    if text in ("", "none", "off"):
        return ()
    try:
        axes = tuple(sorted({int(part) for part in text.split(",") if part.strip()}))
    except ValueError:
        problem = f"--tta: expected 'all', 'none' or axes like 0,1,2, got {text!r}"
        raise argparse.ArgumentTypeError(problem) from None
    if any(a not in (0, 1, 2) for a in axes):
        raise argparse.ArgumentTypeError(f"--tta: axes must be 0, 1 or 2, got {text!r}")
    return axes


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
        "--input", required=True, help="volume (.tif/.zarr), folder, or (block-wise) a zarr URL"
    )
    parser.add_argument(
        "--output",
        required=True,
        help="output .tif/.zarr (folder mode: a folder; block-wise: .zarr/.ome.zarr or URL)",
    )
    parser.add_argument(
        "--split",
        choices=("test", "train", "all"),
        default="test",
        help="which images of a challenge dataset folder (default: test)",
    )
    parser.add_argument("--format", choices=("tif", "zarr"), default="tif", help="file type in folder mode")
    parser.add_argument("--step", type=float, default=0.5, help="tile step as a fraction of the patch (0.5)")
    parser.add_argument("--no-gaussian", action="store_true", help="blend tiles with equal weights")
    parser.add_argument(
        "--tta",
        type=parse_tta,
        default=(),
        metavar="AXES",
        help="mirroring TTA axes: 'all', 'none' (default) or e.g. '0,1,2'",
    )
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    parser.add_argument("--folds", nargs="+", metavar="FOLD", help="nnU-Net folds to ensemble (default: all)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth", help="nnU-Net checkpoint file name")
    parser.add_argument(
        "--dtype",
        choices=("float16", "float32", "uint8"),
        default=None,
        help="output values: float16 (default)/float32 probability or uint8 0-255 "
        "(block-wise runs: uint8 only)",
    )
    parser.add_argument("--no-skip-air", action="store_true", help="run the network on all-zero tiles too")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
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
    """The volume as a lazy (dask) array, through core.volume_io."""
    from napari_vesuvius.core.volume_io import open_volume

    return open_volume(path)


def _jobs(args: argparse.Namespace) -> list[tuple[str, Path, Path]]:
    """(id, input, output) for every volume to predict."""
    source, target = Path(args.input), Path(args.output)
    if not source.exists():
        raise VolumeError(source, "input not found")
    from napari_vesuvius.core.volume_io import is_zarr_path

    if source.is_file() or is_zarr_path(source):
        if target.suffix.lower() not in (*TIFF_SUFFIXES, ".zarr"):
            raise VolumeError(target, "output must end in .tif, .tiff or .zarr")
        return [(source.stem, source, target)]
    from napari_vesuvius.core.dataset import ChallengeDataset, is_dataset_folder

    if is_dataset_folder(source):
        dataset = ChallengeDataset.open(source)
        ids = {"test": dataset.test_ids, "train": dataset.train_ids, "all": dataset.ids}[args.split]
        inputs = [(i, dataset.image_path(i)) for i in ids]
        inputs = [(i, p) for i, p in inputs if p.exists()]
    else:
        inputs = sorted(
            (p.stem, p) for p in source.iterdir() if p.suffix.lower() in TIFF_SUFFIXES or is_zarr_path(p)
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
    import numpy as np

    from napari_vesuvius.core.inference.engine import predict_volume
    from napari_vesuvius.core.progress import ConsoleProgress, run_job

    volume = _open(source)
    kwargs = _engine_settings(args)
    progress = None if args.quiet else ConsoleProgress(label)
    dtype_name = args.dtype or "float16"
    try:
        if target.suffix.lower() == ".zarr":
            import zarr

            from napari_vesuvius.core.atomic import remove_path, temp_sibling
            from napari_vesuvius.core.volume_io import cubic_chunks
            from napari_vesuvius.core.volume_write import swap_in

            tmp = temp_sibling(target, ".partial.zarr")  # also removes a killed run's partial store
            dtype = np.dtype(dtype_name)
            out = zarr.create_array(
                store=str(tmp),
                shape=volume.shape,
                dtype=dtype,
                chunks=cubic_chunks(volume.shape, dtype.itemsize),
                fill_value=0,
            )
            try:
                result = run_job(predict_volume(volume.data, models, output=out, **kwargs), progress)
                swap_in(tmp, target)  # an existing target stays until the new store is in place
            finally:
                if tmp.exists():
                    remove_path(tmp)
        else:
            from napari_vesuvius.core.volume_io import write_volume

            result = run_job(predict_volume(volume.data, models, output_dtype=dtype_name, **kwargs), progress)
            write_volume(target, result.probability)
    finally:
        volume.close()
    return result


def _engine_settings(args: argparse.Namespace) -> dict[str, Any]:
    return dict(
        step=args.step, gaussian=not args.no_gaussian, tta_axes=args.tta, batch_size=args.batch_size,
        device=args.device, precision=args.precision, skip_air=not args.no_skip_air,
    )  # fmt: skip


def _block_wise(args: argparse.Namespace) -> bool:
    """The full-scroll path: asked for, implied by a cluster option, or needed for a URL."""
    from napari_vesuvius.core.scroll import is_url

    implied = args.workers is not None or args.scheduler or args.block_size is not None
    return bool(args.distributed or implied or is_url(args.input) or is_url(args.output))


def _predict_scroll(args: argparse.Namespace, folds: Any) -> int:
    """Block-wise prediction of one zarr volume on a dask cluster (see the module docstring)."""
    from napari_vesuvius.core.progress import ConsoleProgress, run_job
    from napari_vesuvius.core.scroll import is_url, predict_scroll
    from napari_vesuvius.core.submit import ModelSpec

    if args.dtype not in (None, "uint8"):
        raise VolumeError(args.output, f"block-wise outputs are uint8 0-255 (got --dtype {args.dtype})")
    if not is_url(args.output) and not args.output.rstrip("/").lower().endswith(".zarr"):
        raise VolumeError(args.output, "block-wise output must be a .zarr / .ome.zarr folder or a zarr URL")
    if not is_url(args.output):  # an existing output is resumed (or replaced with --overwrite)
        from napari_vesuvius.core.outputs import refuse_inputs

        refuse_inputs(args.output, [None if is_url(args.input) else args.input, *args.model])
    weights = args.weights or [1.0] * len(args.model)
    specs = [
        ModelSpec(Path(path), weight, None if folds is None else tuple(folds), args.checkpoint)
        for path, weight in zip(args.model, weights, strict=True)
    ]
    ome = args.ome_zarr or args.output.rstrip("/").lower().endswith(".ome.zarr")
    job = predict_scroll(
        args.input, args.output, specs, scheduler=args.scheduler, workers=args.workers,
        block_size=args.block_size, chunk_size=args.chunk_size, ome=ome, overwrite=args.overwrite,
        **_engine_settings(args),
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
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.inference.model_api import WeightedModel

    if args.weights is not None and len(args.weights) != len(args.model):
        problem = f"--weights needs one value per --model ({len(args.model)}), got {len(args.weights)}"
        raise VolumeError(None, problem)
    folds = None if args.folds is None else [int(f) if f.isdigit() else f for f in args.folds]
    if _block_wise(args):
        return _predict_scroll(args, folds)
    # this process exists for the run: tile threads reuse freed activations (core/heap.py)
    keep_freed_memory(single_arena=True)
    jobs = _jobs(args)
    _check_outputs(args, jobs)
    loaded = [load_model(path, folds=folds, checkpoint=args.checkpoint) for path in args.model]
    weights = args.weights or [1.0] * len(loaded)
    models = [WeightedModel(m, w) for m, w in zip(loaded, weights, strict=True)]
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
