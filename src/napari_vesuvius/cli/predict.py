"""``napari-vesuvius predict``: sliding-window surface probability of one volume or a folder of volumes.

``--input`` is a volume (``.tif``/``.zarr``) → ``--output`` file (format by extension), or a folder
(challenge dataset folder → its ``test_images/`` by default, or any folder of TIFFs such as
``test_images/``) → ``--output`` folder with one ``<id>.tif`` (or ``.zarr``) per volume.
"""

from __future__ import annotations

import argparse
import shutil
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
    parser.add_argument("--model", action="append", required=True, metavar="PATH",
                        help="built-in checkpoint (.pt) or nnU-Net trained model folder; repeat to ensemble")
    parser.add_argument("--weights", type=float, nargs="+", metavar="W",
                        help="ensemble weight per --model (default: equal)")
    parser.add_argument("--input", required=True, type=Path,
                        help="volume (.tif/.zarr) or folder")
    parser.add_argument("--output", required=True, type=Path,
                        help="output .tif/.zarr (folder mode: a folder)")
    parser.add_argument("--split", choices=("test", "train", "all"), default="test",
                        help="which images of a challenge dataset folder (default: test)")
    parser.add_argument("--format", choices=("tif", "zarr"), default="tif", help="file type in folder mode")
    parser.add_argument("--step", type=float, default=0.5, help="tile step as a fraction of the patch (0.5)")
    parser.add_argument("--no-gaussian", action="store_true", help="blend tiles with equal weights")
    parser.add_argument("--tta", type=parse_tta, default=(), metavar="AXES",
                        help="mirroring TTA axes: 'all', 'none' (default) or e.g. '0,1,2'")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto")
    parser.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto")
    parser.add_argument("--folds", nargs="+", metavar="FOLD", help="nnU-Net folds to ensemble (default: all)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth", help="nnU-Net checkpoint file name")
    parser.add_argument("--dtype", choices=("float16", "float32", "uint8"), default="float16",
                        help="output values: float16/float32 probability or uint8 0-255")
    parser.add_argument("--no-skip-air", action="store_true", help="run the network on all-zero tiles too")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _open(path: Path) -> Any:
    """The volume as a lazy (dask) array, through core.volume_io."""
    from napari_vesuvius.core.volume_io import open_volume

    return open_volume(path)


def _jobs(args: argparse.Namespace) -> list[tuple[str, Path, Path]]:
    """(id, input, output) for every volume to predict."""
    source, target = args.input, args.output
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
    target.mkdir(parents=True, exist_ok=True)
    return [(vid, path, target / f"{vid}.{args.format}") for vid, path in inputs]


def _predict_one(args: argparse.Namespace, models: Any, source: Path, target: Path, label: str) -> Any:
    import numpy as np

    from napari_vesuvius.core.inference.engine import predict_volume
    from napari_vesuvius.core.progress import ConsoleProgress, run_job

    volume = _open(source)
    kwargs = dict(
        step=args.step, gaussian=not args.no_gaussian, tta_axes=args.tta, batch_size=args.batch_size,
        device=args.device, precision=args.precision, skip_air=not args.no_skip_air,
    )  # fmt: skip
    progress = None if args.quiet else ConsoleProgress(label)
    try:
        if target.suffix.lower() == ".zarr":
            import zarr

            from napari_vesuvius.core.volume_io import cubic_chunks

            tmp = target.with_name(f".{target.name}.partial")
            if tmp.exists():
                shutil.rmtree(tmp)
            dtype = np.dtype(args.dtype)
            out = zarr.create_array(
                store=str(tmp),
                shape=volume.shape,
                dtype=dtype,
                chunks=cubic_chunks(volume.shape, dtype.itemsize),
                fill_value=0,
            )
            try:
                result = run_job(predict_volume(volume.data, models, output=out, **kwargs), progress)
                if target.exists():
                    shutil.rmtree(target)
                tmp.rename(target)
            finally:
                if tmp.exists():
                    shutil.rmtree(tmp)
        else:
            from napari_vesuvius.core.volume_io import write_volume

            result = run_job(predict_volume(volume.data, models, output_dtype=args.dtype, **kwargs), progress)
            write_volume(target, result.probability)
    finally:
        volume.close()
    return result


def run(args: argparse.Namespace) -> int:
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.inference.model_api import WeightedModel

    if args.weights is not None and len(args.weights) != len(args.model):
        problem = f"--weights needs one value per --model ({len(args.model)}), got {len(args.weights)}"
        raise VolumeError(None, problem)
    jobs = _jobs(args)
    folds = None if args.folds is None else [int(f) if f.isdigit() else f for f in args.folds]
    loaded = [load_model(path, folds=folds, checkpoint=args.checkpoint) for path in args.model]
    weights = args.weights or [1.0] * len(loaded)
    models = [WeightedModel(m, w) for m, w in zip(loaded, weights, strict=True)]
    for index, (vid, source, target) in enumerate(jobs, 1):
        if target.exists() and not args.overwrite:
            raise VolumeError(target, "output exists (use --overwrite)")
        label = f"{vid} ({index}/{len(jobs)})" if len(jobs) > 1 else vid
        result = _predict_one(args, models, source, target, label)
        print(
            f"{vid}: wrote {target} in {result.elapsed_s:.1f}s "
            f"({result.voxels_per_s / 1e6:.2f} Mvox/s, tiles run {result.tiles_run}, "
            f"skipped {result.tiles_skipped}, {result.settings['device']} {result.settings['precision']})",
            file=sys.stderr if args.quiet else sys.stdout,
        )
    return 0
