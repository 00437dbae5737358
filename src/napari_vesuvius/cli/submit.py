"""``napari-vesuvius submit`` and ``napari-vesuvius export``: write a validated ``submission.zip``.

``submit`` runs predict → clean-up → export for every test volume of a dataset folder (or of a folder
of test images), one volume at a time, with no napari or display: it is the command to run in an
offline competition notebook::

    napari-vesuvius submit --model model.pt --data /kaggle/input/<competition> \\
        --postprocess config.json --out submission.zip

Ensembles: repeat ``--model``; ``--weight W`` after a ``--model`` sets that model's weight (default 1).
``export`` zips masks already computed (``<id>.tif``, uint8 {0,1}) after validating them against the
test images. Both exit with status 1 and a message naming the id and the problem when validation
fails; an earlier submission.zip is then left as it was. An existing ``--out`` is replaced only with
``--overwrite`` (and only once the new zip is complete and verified).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from napari_vesuvius.cli._intensity_check import add_intensity_check_argument, references, warn_intensity
from napari_vesuvius.core.inference.settings import add_settings_arguments, settings_from_args


class _ModelAction(argparse.Action):
    """``--model PATH``: append a new model entry (weight 1 until a ``--weight`` follows)."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        entries = list(getattr(namespace, self.dest, None) or [])
        entries.append([Path(values), None])
        setattr(namespace, self.dest, entries)


class _WeightAction(argparse.Action):
    """``--weight W``: the weight of the ``--model`` given just before it."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: Any, values: Any, option: Any = None
    ) -> None:
        entries = getattr(namespace, "models", None)
        if not entries:
            parser.error("--weight must follow the --model it applies to")
        if entries[-1][1] is not None:
            parser.error(f"--weight given twice for --model {entries[-1][0]}")
        if not values > 0:
            parser.error(f"--weight must be positive, got {values}")
        entries[-1][1] = float(values)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "submit",
        help="predict, clean up and export every test volume into a validated submission.zip",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        dest="models",
        action=_ModelAction,
        required=True,
        metavar="PATH",
        help="built-in checkpoint (.pt) or nnU-Net model folder; repeat to ensemble",
    )
    parser.add_argument(
        "--weight",
        action=_WeightAction,
        type=float,
        metavar="W",
        help="ensemble weight of the preceding --model (default 1)",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="challenge dataset folder (test.csv + test_images/) or a folder of test images",
    )
    parser.add_argument(
        "--postprocess",
        type=Path,
        metavar="JSON",
        help="post-processing config (Tune widget 'Save config'); default: the clean-up the model chose "
        "on its validation volumes in training, else the built-in defaults",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("submission.zip"), help="the zip to write (default: submission.zip)"
    )
    add_settings_arguments(parser, skip_air=False)
    parser.add_argument("--folds", nargs="+", metavar="FOLD", help="nnU-Net folds to ensemble (default: all)")
    parser.add_argument("--checkpoint", default="checkpoint_final.pth", help="nnU-Net checkpoint file name")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out zip")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    add_intensity_check_argument(parser)
    parser.set_defaults(func=run_submit)

    export = subparsers.add_parser(
        "export",
        help="validate masks already computed (<id>.tif) and zip them into submission.zip",
        description="Validate one uint8 {0,1} mask per test id (shape of its test image) and write "
        "them into a submission zip, atomically.",
    )
    export.add_argument("--masks", required=True, type=Path, help="folder of <id>.tif (or .zarr) masks")
    export.add_argument(
        "--data",
        required=True,
        type=Path,
        help="challenge dataset folder or folder of test images (ids and shapes)",
    )
    export.add_argument("--out", type=Path, default=Path("submission.zip"), help="default: submission.zip")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --out zip")
    export.add_argument("--quiet", action="store_true", help="no progress bar")
    export.set_defaults(func=run_export)


def _print_summary(summary: Any) -> None:
    print(summary.format_table())
    print(
        f"verified: every id present, uint8 {{0,1}}, shapes match, zip re-read identically -> {summary.path}"
    )


def run_submit(args: argparse.Namespace) -> int:
    from napari_vesuvius.core.export.submit import iter_submit
    from napari_vesuvius.core.inference.models import model_specs, parse_folds
    from napari_vesuvius.core.outputs import check_output_path
    from napari_vesuvius.core.postprocess import PostprocessConfig
    from napari_vesuvius.core.progress import ConsoleProgress, run_job

    settings = settings_from_args(args)  # a bad --step / --batch-size is refused first
    inputs = [args.data, args.postprocess, *(path for path, _ in args.models)]
    check_output_path(args.out, inputs=inputs, overwrite=args.overwrite)
    paths, weights = [path for path, _ in args.models], [weight for _, weight in args.models]
    specs = model_specs(paths, weights, parse_folds(args.folds), args.checkpoint)
    config = PostprocessConfig.load(args.postprocess) if args.postprocess is not None else None
    _check_intensities(args, paths)
    job = iter_submit(args.data, specs, args.out, config, settings)
    summary = run_job(job, None if args.quiet else ConsoleProgress("submit"))
    _print_summary(summary)
    if config is None:
        print(
            f"note: no --postprocess config given; used {summary.settings['postprocess_source']}",
            file=sys.stderr,
        )
    return 0


def _check_intensities(args: argparse.Namespace, paths: list[Path]) -> None:
    """Warn (stderr) about test volumes clearly outside the models' training intensities."""
    if not args.intensity_check:
        return
    from napari_vesuvius.core.export.targets import submission_targets

    try:
        targets = submission_targets(args.data)
    except Exception:  # iter_submit reports a bad data folder with its own message
        return
    refs = references(paths)
    for target in targets:
        warn_intensity(args, refs, target.image, str(target.image))


def run_export(args: argparse.Namespace) -> int:
    from napari_vesuvius.core.export import iter_export_submission
    from napari_vesuvius.core.outputs import check_output_path
    from napari_vesuvius.core.progress import ConsoleProgress, run_job

    check_output_path(args.out, inputs=[args.masks, args.data], overwrite=args.overwrite)
    job = iter_export_submission(args.masks, args.out, args.data)
    summary = run_job(job, None if args.quiet else ConsoleProgress("export"))
    _print_summary(summary)
    return 0
