"""``napari-vesuvius finetune``: fine-tune a model on corrected labels (the Proofread widget's Retrain).

The corrected volumes (``--images`` with ``--labels`` in the same order, or ``--pair``; ``--latest``
takes each label file's newest ``<stem>.vNNN`` version) are always trained on; ``--data`` adds the
volumes of training folders (a folder volume whose image is a corrected one uses the corrected labels).
Training starts from ``--model`` with a fine-tuning learning rate (1e-3 SGD, 1e-4 AdamW unless ``--lr``)
and writes a normal run folder: ``train --run-dir DIR --resume`` continues it. ``--compare`` then
scores the old and the new model on labelled volumes the fine-tuning did not train on (the run's
validation volumes, else the other labelled volumes of the corrected images' dataset folders and of
``--data``; :mod:`napari_vesuvius.core.proofread.compare`), with the real labels; when there are none it
says that no fair comparison is possible (scores against the corrected labels would favour the old
model, whose output they started from).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "finetune", help="fine-tune a model on corrected labels (proofreading)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--model", required=True, help="checkpoint (or nnU-Net folder) to start from")
    p.add_argument("--images", nargs="+", default=[], metavar="IMAGE", help="corrected volumes' images")
    p.add_argument(
        "--labels", nargs="+", default=[], metavar="LABEL", help="their corrected labels, same order"
    )
    p.add_argument("--pair", nargs=2, action="append", default=[], metavar=("IMAGE", "LABEL"),
                   help="a corrected image/label pair; repeatable")  # fmt: skip
    p.add_argument("--latest", action="store_true", help="use each label file's newest version (<stem>.vNNN)")
    p.add_argument(
        "--data",
        action="append",
        default=[],
        metavar="DIR",
        help="also train on this training folder (challenge, run or images/+labels/); repeatable",
    )
    p.add_argument(
        "--run-dir", required=True, help="new run folder (config.json, checkpoints, metrics.jsonl)"
    )
    p.add_argument("--epochs", type=int, required=True)
    p.add_argument("--iterations-per-epoch", type=int, required=True)
    p.add_argument("--patch-size", type=int, nargs=3, metavar=("Z", "Y", "X"), help="default: the model's")
    p.add_argument("--batch-size", type=int, default=2)
    p.add_argument("--device", default="auto", help="auto (default), cuda, cuda:N, mps or cpu")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), default="sgd")
    p.add_argument("--lr", type=float, help="default 1e-3 (sgd) / 1e-4 (adamw): a tenth of training")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held out from the --data volumes only")
    p.add_argument("--val-patches", type=int, default=20)
    p.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's choice)")
    p.add_argument("--loader-threads", type=int, default=1)
    p.add_argument(
        "--compare", action="store_true", help="score old vs new model on labelled volumes not trained on"
    )
    p.add_argument(
        "--postprocess", metavar="CONFIG", help="post-processing JSON for --compare (default: defaults)"
    )
    p.add_argument("--json", action="store_true", help="print the result (and --compare scores) as JSON")
    p.set_defaults(func=run)


def _corrected_pairs(args: argparse.Namespace) -> list[tuple[Path, Path]]:
    from napari_vesuvius.core.errors import DatasetError
    from napari_vesuvius.core.proofread.naming import latest_version

    if len(args.images) != len(args.labels):
        raise DatasetError(f"--images lists {len(args.images)} volume(s) but --labels {len(args.labels)}")
    pairs = [(Path(i), Path(lb)) for i, lb in [*zip(args.images, args.labels, strict=True), *args.pair]]
    if not pairs:
        raise DatasetError("give the corrected volumes: --images ... --labels ... or --pair IMAGE LABEL")
    if args.latest:
        pairs = [(image, latest_version(label) or label) for image, label in pairs]
    return pairs


def run(args: argparse.Namespace) -> int:
    from napari_vesuvius.cli.train import check_run_dir
    from napari_vesuvius.core.errors import CancelledError
    from napari_vesuvius.core.progress import ConsoleProgress, StopFlag, run_job
    from napari_vesuvius.core.proofread.finetune import finetune_config, iter_finetune, training_pairs
    from napari_vesuvius.core.training.config import AugmentConfig

    corrected = _corrected_pairs(args)
    inputs = [args.model, args.postprocess, *args.data, *(path for pair in corrected for path in pair)]
    check_run_dir(Path(args.run_dir), inputs)
    settings: dict[str, Any] = {
        "device": args.device, "val_patches": args.val_patches, "torch_threads": args.threads,
        "loader_threads": args.loader_threads,
    }  # fmt: skip
    if args.no_augment:
        settings["augment"] = AugmentConfig.none()
    config = finetune_config(
        args.model, corrected, data=args.data, epochs=args.epochs,
        iterations_per_epoch=args.iterations_per_epoch, patch_size=args.patch_size,
        batch_size=args.batch_size, val_fraction=args.val_fraction, optimizer=args.optimizer,
        lr=args.lr, seed=args.seed, **settings,
    )  # fmt: skip
    _, _, note = training_pairs(corrected, args.data, val_fraction=args.val_fraction, seed=args.seed)
    print(f"fine-tuning {args.model} on {note}", file=sys.stderr)
    print("settings: " + json.dumps(config.to_dict()), file=sys.stderr)

    def say(message: str) -> None:
        print(f"\n{message}" if sys.stderr.isatty() else message, file=sys.stderr, flush=True)

    progress = ConsoleProgress("finetune", interval=10.0)  # plain lines when piped to a log
    with StopFlag() as stop:
        try:
            result = run_job(iter_finetune(config, args.run_dir, log=say), progress, stop)
        except CancelledError:
            print(f"cancelled: state saved in {args.run_dir}; continue with train --resume", file=sys.stderr)
            return 130
        finally:
            progress.close()
    summary: dict[str, Any] = {
        "run_dir": str(result.run_dir), "checkpoint": str(result.checkpoint),
        "epochs": result.train.epochs_done, "iterations": result.train.iterations_done,
    }  # fmt: skip
    print(f"best checkpoint: {result.checkpoint}", file=sys.stderr)
    if args.compare:
        summary["compare"] = _compare(args, config, result.checkpoint)
    if args.json:
        print(json.dumps(summary, indent=2))
    return 0


def _compare(args: argparse.Namespace, config: Any, checkpoint: Path) -> list[dict]:
    """Old vs new model on held-out labelled volumes: predict, post-process, score; a line each."""
    import torch

    from napari_vesuvius.core.postprocess import PostprocessConfig
    from napari_vesuvius.core.progress import run_job
    from napari_vesuvius.core.proofread.compare import held_out_volumes, iter_fair_compare

    postprocess = PostprocessConfig.load(args.postprocess) if args.postprocess else PostprocessConfig()
    volumes = held_out_volumes(config, args.data)
    previous = torch.get_num_threads()
    if args.threads > 0:  # the same CPU budget as the training
        torch.set_num_threads(args.threads)
    try:
        comparison = run_job(
            iter_fair_compare(args.model, checkpoint, volumes, postprocess, device=args.device)
        )
    finally:
        torch.set_num_threads(previous)
    rows = []
    for volume, old, new in zip(comparison.volumes, comparison.old, comparison.new, strict=True):
        rows.append({"id": volume.id, "why": volume.why, "old": old.to_dict(), "new": new.to_dict()})
        print(f"{volume.id}: old {old.score:.4f} -> new {new.score:.4f} ({volume.why})", file=sys.stderr)
    print(comparison.verdict(), file=sys.stderr)
    if comparison.fair:
        print(comparison.note, file=sys.stderr)
    return rows
