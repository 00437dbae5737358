"""``napari-vesuvius postprocess PROB --config cfg.json --output MASK``: clean a probability volume.

Also ``napari-vesuvius postprocess --write-default-config cfg.json`` to start a config from the
defaults. PROB is uint8 (0–255) or float in [0, 1]; MASK is written as uint8 {0, 1} (.tif, plain .zarr,
or .ome.zarr with a max-pooled pyramid; zarr format 2 unless ``--zarr-format 3``), placed like PROB
(its physical scale, origin and unit).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_vesuvius.cli._volume_options import add_output_format_options


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "postprocess",
        help="threshold and clean up a probability volume into a {0,1} mask",
        description="Run the post-processing pipeline (thresholds, morphology, components) on a "
        "probability volume. Without --config the defaults are used.",
    )
    parser.add_argument("prob", nargs="?", help="probability volume (.tif/.tiff or .zarr)")
    parser.add_argument("--config", "-c", help="post-processing config JSON (see --write-default-config)")
    parser.add_argument("--output", "-o", help="output mask (.tif/.tiff, .zarr or .ome.zarr), uint8 {0,1}")
    add_output_format_options(parser)
    parser.add_argument(
        "--scan-mask-from",
        metavar="CT",
        help="CT volume whose nonzero voxels are the scanned region (gating)",
    )
    parser.add_argument(
        "--write-default-config", metavar="JSON", help="write the default config to JSON and exit"
    )
    parser.add_argument("--timings", action="store_true", help="print seconds per step as JSON to stderr")
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing output (an input never is)"
    )
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_vesuvius.core.outputs import check_output_path
    from napari_vesuvius.core.postprocess import PostprocessConfig

    if args.write_default_config:
        inputs = [args.prob, args.config, args.scan_mask_from, args.output]
        check_output_path(args.write_default_config, inputs=inputs, overwrite=args.overwrite)
        if args.prob and args.output:
            _check_output(args)
        path = PostprocessConfig().save(args.write_default_config)
        print(f"wrote default config to {path}")
        if not args.prob:
            return 0
    if not args.prob or not args.output:
        print("error: postprocess needs PROB and --output (or --write-default-config)", file=sys.stderr)
        return 2
    _check_output(args)
    config = PostprocessConfig.load(args.config) if args.config else PostprocessConfig()
    return _postprocess(args, config)


def _check_output(args: argparse.Namespace) -> None:
    """The mask path: a volume type, never an input, an existing file only with --overwrite."""
    from napari_vesuvius.core.errors import VolumeError
    from napari_vesuvius.core.outputs import check_output_path

    path = Path(args.output)
    if path.suffix.lower() not in (".tif", ".tiff", ".zarr"):
        raise VolumeError(path, "unsupported output type; use .tif, .tiff or .zarr")
    inputs = [args.prob, args.config, args.scan_mask_from, args.write_default_config]
    check_output_path(path, inputs=inputs, overwrite=args.overwrite)


def _postprocess(args: argparse.Namespace, config: object) -> int:
    import numpy as np

    from napari_vesuvius.core.postprocess import iter_pipeline, scan_mask_from_ct
    from napari_vesuvius.core.progress import ConsoleProgress, run_job
    from napari_vesuvius.core.volume.io import iter_write_volume, open_volume

    with open_volume(args.prob) as volume:
        prob = np.asarray(volume.data.compute())
        spatial = volume.spatial
    scan = None
    if args.scan_mask_from:
        with open_volume(args.scan_mask_from) as ct_volume:
            if tuple(ct_volume.shape) != prob.shape:
                from napari_vesuvius.core.errors import VolumeError

                raise VolumeError(
                    args.scan_mask_from,
                    f"shape {ct_volume.shape} does not match the probabilities {prob.shape}",
                )
            scan = scan_mask_from_ct(ct_volume.data)
    on_progress = None if args.quiet else ConsoleProgress("postprocess")
    timings: dict[str, float] = {}
    mask = run_job(
        iter_pipeline(prob, config, scan_mask=scan, source=args.prob, timings=timings), on_progress
    )
    write_progress = None if args.quiet else ConsoleProgress("write")
    job = iter_write_volume(
        args.output, mask.view(np.uint8), zarr_format=args.zarr_format, spatial=spatial, downsample="max"
    )
    run_job(job, write_progress)
    if args.timings:
        print(json.dumps({k: round(v, 4) for k, v in timings.items()}), file=sys.stderr)
    if not args.quiet:
        print(f"wrote {args.output}: {int(mask.sum())} foreground voxels ({mask.mean():.2%})")
    return 0
