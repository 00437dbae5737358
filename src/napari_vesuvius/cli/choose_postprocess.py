"""``napari-vesuvius choose-postprocess``: choose a model's clean-up (T_low × closing) on labelled volumes.

Two forms::

    napari-vesuvius choose-postprocess --run-dir RUN
    napari-vesuvius choose-postprocess --model MODEL --data DIR --ids ID [ID ...] [--out cfg.json] [--store]

``--run-dir`` repeats the last step of a training run (its validation volumes, stored in both
checkpoints and ``postprocess.json``), e.g. after it was cancelled during that step. ``--model`` takes any
model ``predict`` accepts (a checkpoint, or an nnU-Net v2 folder) and labelled volumes of a dataset or
training folder named by ``--ids``: never the volumes the model was trained on, or the choice flatters
it. It prints the mean score of every setting tried, writes the chosen config with ``--out`` (for
``submit --postprocess`` or the Tune widget's Load) and, with ``--store``, records it in the checkpoint
file so that ``submit``, the Export and the Tune widgets use it for that model by default.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "choose-postprocess",
        help="choose a model's clean-up (hysteresis T_low, closing) on labelled validation volumes",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--run-dir", type=Path, help="a training run folder: redo its end-of-run choice")
    parser.add_argument("--model", type=Path, help="checkpoint file or nnU-Net v2 trained model folder")
    parser.add_argument("--folds", nargs="+", help="nnU-Net folds (default: all found)")
    parser.add_argument("--data", type=Path, help="dataset or training folder with the labelled volumes")
    parser.add_argument("--ids", nargs="+", help="the validation volume ids in --data")
    parser.add_argument("--out", type=Path, help="write the chosen post-processing config (JSON) here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    parser.add_argument("--store", action="store_true", help="record the choice in the --model checkpoint")
    parser.add_argument("--device", help="auto, cpu, cuda or mps (default: auto, or the run's device)")
    parser.add_argument("--batch-size", type=int, default=2, help="tiles per forward pass (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from napari_vesuvius.core.progress import ConsoleProgress, run_job

    progress = None if args.quiet else ConsoleProgress("choose-postprocess")
    if (args.run_dir is None) == (args.model is None):
        print("error: give either --run-dir or --model (with --data and --ids)", file=sys.stderr)
        return 2
    if args.out is not None:
        from napari_vesuvius.core.outputs import check_output_path
        from napari_vesuvius.core.training import rundir

        inputs = [args.run_dir, args.model, args.data]
        if args.run_dir is not None:  # the run's own files are inputs too
            names = (rundir.CONFIG_JSON, rundir.CHECKPOINT_BEST, rundir.CHECKPOINT_LAST, rundir.TRAIN_STATE)
            inputs += [args.run_dir / name for name in (*names, rundir.METRICS_JSONL)]
        check_output_path(args.out, inputs=inputs, overwrite=args.overwrite)
    if args.run_dir is not None:
        from napari_vesuvius.core.training.postprocess_step import iter_choose_for_run

        choices = run_job(iter_choose_for_run(args.run_dir, device=args.device), progress)
        for name, choice in choices.items():
            print(f"{name}:")
            _print_choice(choice)
        if args.out is not None and choices:
            next(iter(choices.values())).config.save(args.out)
        return 0 if choices else 1
    return _run_for_model(args, progress)


def _run_for_model(args: argparse.Namespace, progress: Any) -> int:
    from napari_vesuvius.core.errors import CheckpointError, DatasetError
    from napari_vesuvius.core.inference.checkpoint import update_checkpoint_metadata
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.postprocess.choice import METADATA_KEY, iter_choose_for_model
    from napari_vesuvius.core.postprocess.sweep import load_volume_array
    from napari_vesuvius.core.progress import run_job
    from napari_vesuvius.core.training.data import collect_sources

    if args.data is None or not args.ids:
        print("error: --model needs --data and --ids (the labelled validation volumes)", file=sys.stderr)
        return 2
    if args.store and not args.model.is_file():
        raise CheckpointError(args.model, "--store needs a checkpoint file, not a folder")
    sources = {source.id: source for source in collect_sources([str(args.data)], [])}
    missing = [volume_id for volume_id in args.ids if volume_id not in sources]
    if missing:
        raise DatasetError(f"{args.data}: no labelled volume with id(s) {', '.join(missing)}")
    volumes = [
        (i, load_volume_array(sources[i].image), load_volume_array(sources[i].label)) for i in args.ids
    ]
    model = load_model(args.model, folds=args.folds)
    job = iter_choose_for_model(model, volumes, device=args.device or "auto", batch_size=args.batch_size)
    choice = run_job(job, progress)
    _print_choice(choice)
    if args.out is not None:
        choice.config.save(args.out)
        print(f"wrote {args.out}")
    if args.store:
        update_checkpoint_metadata(args.model, {METADATA_KEY: choice.to_metadata()})
        print(f"stored in {args.model}: submit, Export and Tune use it for this model by default")
    return 0


def _print_choice(choice: Any) -> None:
    """The mean score of every setting tried (rows: closing, columns: T_low), then the choice."""
    t_lows = sorted({row["t_low"] for row in choice.tried})
    closings = list(dict.fromkeys((row["closing_z"], row["closing_xy"]) for row in choice.tried))
    scores = {(row["closing_z"], row["closing_xy"], row["t_low"]): row["score"] for row in choice.tried}
    print("closing \\ T_low " + " ".join(f"{t:>6g}" for t in t_lows))
    for z, xy in closings:
        cells = " ".join(f"{scores.get((z, xy, t), float('nan')):6.3f}" for t in t_lows)
        print(f"{f'z{z}/xy{xy}':>15} {cells}")
    print(choice.describe())
