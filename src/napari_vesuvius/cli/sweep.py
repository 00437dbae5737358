"""``napari-vesuvius sweep PROB LABEL --param t_low --values 0.2:0.6:0.05``: score a parameter grid.

PROB and LABEL are two volumes or two folders paired by ``<id>`` (as for ``score``: a challenge dataset
folder as LABEL means its ``train_labels/``). Every probability file needs a label. ``--ct`` (a CT
volume, a folder of them, or a dataset folder → ``train_images/``) gates masks to ``ct > 0``.
Prints value → mean score (and terms), the best marked; ``--json`` prints one JSON object instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.metric.score import TOPO_BACKENDS
from napari_vesuvius.core.outputs import check_output_path
from napari_vesuvius.core.postprocess import ConfigError, PostprocessConfig
from napari_vesuvius.core.postprocess.sweep import (
    SWEEP_PARAMETERS,
    SweepResult,
    cases_from_files,
    iter_sweep,
    parse_values,
    volume_files,
)
from napari_vesuvius.core.progress import ConsoleProgress, run_job
from napari_vesuvius.core.volume.io import TIFF_SUFFIXES, is_zarr_path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "sweep",
        help="score a post-processing parameter over a grid of values (mean over volumes)",
        description="Post-process PROB with each value of one parameter and score it against LABEL.",
    )
    parser.add_argument("prob", help="probability volume (.tif/.tiff/zarr) or folder of <id> volumes")
    parser.add_argument("label", help="label volume or folder (or a challenge dataset folder)")
    parser.add_argument("--param", required=True, choices=list(SWEEP_PARAMETERS), help="parameter to sweep")
    parser.add_argument("--values", required=True, help="start:stop:step (stop included) or a,b,c")
    parser.add_argument("--config", type=Path, help="base post-processing config (JSON); default settings")
    parser.add_argument("--ct", help="CT volume / folder / dataset folder: gate masks to the scan (ct > 0)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument(
        "--write-best", type=Path, metavar="CFG", help="save the base config with the best value"
    )
    parser.add_argument(
        "--topo-backend", choices=TOPO_BACKENDS, default="auto", help="Betti matching backend"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --write-best file")
    parser.set_defaults(func=run)


def ct_paths_for(ct: str | Path, ids: list[str]) -> dict[str, Path]:
    """CT volume per id: one file (single id) or a folder / dataset folder paired by id."""
    ct = Path(ct)
    if not ct.exists():
        raise VolumeError(ct, "file not found")
    if (ct.is_file() and ct.suffix.lower() in TIFF_SUFFIXES) or is_zarr_path(ct):
        if len(ids) != 1:
            raise VolumeError(ct, f"one CT volume given for {len(ids)} probability volumes; give a folder")
        return {ids[0]: ct}
    if (ct / "train_images").is_dir():
        ct = ct / "train_images"
    found = volume_files(ct)
    missing = [i for i in ids if i not in found]
    if missing:
        raise VolumeError(ct, f"no CT volume for id(s) {', '.join(missing)} (expected <id>.tif)")
    return {i: found[i] for i in ids}


def check_shapes(pairs: list[tuple[str, Path, Path]]) -> None:
    """Compare every probability/label pair's shapes from the headers, before any work, naming both."""
    from napari_vesuvius.core.volume.io import open_volume

    for _, prob_path, label_path in pairs:
        with open_volume(prob_path) as prob, open_volume(label_path) as label:
            if tuple(prob.shape) != tuple(label.shape):
                shapes = f"shape {tuple(label.shape)} does not match the probabilities"
                raise VolumeError(label_path, f"{shapes} {prob_path} {tuple(prob.shape)}")


def format_table(result: SweepResult) -> str:
    """value → mean score and term means, the best row marked with ``*``."""
    terms = result.mean_terms
    header = f"  {result.parameter:>10}  score   topo    SD      VOI     split   merge"
    lines = [header, "-" * len(header)]
    for j, value in enumerate(result.values):
        mark = "*" if j == result.best_index else " "
        cells = "  ".join(f"{terms[k][j]:.4f}" for k in ("score", "topo", "surface_dice", "voi_score"))
        cells += f"  {terms['voi_split'][j]:.4f}  {terms['voi_merge'][j]:.4f}"
        lines.append(f"{mark} {value:>10g}  {cells}")
    n = len(result.case_names)
    lines.append(
        f"best {result.parameter} = {result.best_value:g} (mean score {result.best_score:.4f} over {n} "
        f"volume{'s' if n != 1 else ''})"
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from napari_vesuvius.cli.score import find_pairs

    try:
        values = parse_values(args.values)
    except ValueError as error:
        raise ConfigError(None, f"--values: {error}") from None
    if args.write_best:
        inputs = [args.prob, args.label, args.config, args.ct]
        check_output_path(args.write_best, inputs=inputs, overwrite=args.overwrite)
    base = PostprocessConfig.load(args.config) if args.config else PostprocessConfig()
    pairs = find_pairs(args.prob, args.label)
    check_shapes(pairs)
    ids = [volume_id for volume_id, _, _ in pairs]
    ct_paths = ct_paths_for(args.ct, ids) if args.ct else None
    job = iter_sweep(
        cases_from_files(pairs, ct_paths), base, args.param, values, topo_backend=args.topo_backend
    )
    on_progress = ConsoleProgress("sweep") if sys.stderr.isatty() else None
    result: SweepResult = run_job(job, on_progress)
    if args.write_best:
        result.best_config().save(args.write_best)
    if args.json:
        print(json.dumps(result.to_dict()))
    else:
        print(format_table(result))
        if args.write_best:
            print(f"wrote {args.write_best}")
    return 0
