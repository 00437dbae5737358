"""``napari-vesuvius train``: train or fine-tune a surface model in a run folder (resumable).

Epochs and iterations per epoch are required (no hidden defaults); every other setting has a
default, and the complete settings are printed and stored in ``RUN_DIR/config.json``. SIGTERM or
Ctrl-C stops gracefully after the current iteration (checkpoint and state saved, exit code 130);
``--resume`` continues. The best checkpoint is ``RUN_DIR/checkpoint_best.pt`` (``predict --model``).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

EXIT_CANCELLED = 130

#: CLI option → TrainConfig field, for options whose value maps one to one.
_FIELDS = {
    "epochs": "epochs",
    "iterations_per_epoch": "iterations_per_epoch",
    "patch_size": "patch_size",
    "batch_size": "batch_size",
    "device": "device",
    "model_preset": "model_preset",
    "lr": "lr",
    "optimizer": "optimizer",
    "weight_decay": "weight_decay",
    "val_fraction": "val_fraction",
    "score_every": "score_every",
    "score_max_volumes": "score_max_volumes",
    "patience": "patience",
    "init": "init",
    "fold": "fold",
    "seed": "seed",
    "amp": "amp",
    "foreground_fraction": "foreground_fraction",
    "val_patches": "val_patches",
    "loader_threads": "loader_threads",
    "threads": "torch_threads",
    "max_minutes": "max_minutes",
    "normalization": "normalization",
}


def register(subparsers: argparse._SubParsersAction) -> None:
    from napari_vesuvius.core.training.config import NORMALIZATIONS  # torch-free

    p = subparsers.add_parser(
        "train",
        help="train or fine-tune a model in a run folder (resumable)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--run-dir", required=True, help="run folder (config.json, checkpoints, metrics.jsonl)")
    p.add_argument(
        "--data",
        action="append",
        default=None,
        metavar="DIR",
        help="challenge folder, run folder (data/) or images/+labels/ folder; repeatable",
    )
    p.add_argument(
        "--pair",
        nargs=2,
        action="append",
        default=None,
        metavar=("IMAGE", "LABEL"),
        help="an explicit image/label pair; repeatable",
    )
    p.add_argument("--config", help="read settings from a JSON file (options given here override it)")
    p.add_argument("--epochs", type=int, help="number of epochs (required for a new run)")
    p.add_argument("--iterations-per-epoch", type=int, help="iterations per epoch (required for a new run)")
    p.add_argument(
        "--patch-size",
        type=int,
        nargs=3,
        metavar=("Z", "Y", "X"),
        help="default: the --init model's patch size, else 128 128 128",
    )
    p.add_argument("--batch-size", type=int, help="default 2")
    p.add_argument("--device", help="auto (default), cuda, cuda:N, mps or cpu")
    p.add_argument("--model-preset", help="built-in U-Net size: tiny, small (default), medium")
    p.add_argument("--init", metavar="CHECKPOINT_OR_NNUNET_FOLDER", help="fine-tune from this model")
    p.add_argument("--fold", type=int, help="nnU-Net fold to start from (default: the first found)")
    p.add_argument("--optimizer", choices=("sgd", "adamw"), help="default sgd (nnU-Net)")
    p.add_argument("--lr", type=float, help="initial learning rate (default 1e-2 sgd, 1e-3 adamw)")
    p.add_argument("--weight-decay", type=float, help="default 3e-5 sgd, 1e-2 adamw")
    p.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), help="mixed precision (auto: CUDA only)")
    p.add_argument("--val-fraction", type=float, help="held-out fraction of volumes (default 0.2)")
    p.add_argument("--val-ids", nargs="+", help="validation volume ids (instead of --val-fraction)")
    p.add_argument("--val-patches", type=int, help="patches for the per-epoch pseudo-Dice (default 20)")
    p.add_argument("--score-every", type=int, help="leaderboard score every N epochs (default 0: never)")
    p.add_argument("--score-max-volumes", type=int, help="validation volumes scored (default 2)")
    p.add_argument("--patience", type=int, help="early stopping after N epochs without improvement (0: off)")
    p.add_argument("--foreground-fraction", type=float, help="patches centred on surface (default 1/3)")
    p.add_argument(
        "--no-deep-supervision", action="store_true", help="train on the full-resolution output only"
    )
    p.add_argument("--permute-axes", action="store_true", help="augment with z/y/x axis permutations")
    p.add_argument("--no-augment", action="store_true", help="no augmentation at all")
    p.add_argument(
        "--max-minutes",
        type=float,
        metavar="MIN",
        help="wall-clock limit (setup and validation included; default 0: none): stop at the next "
        "iteration, save, and let the learning rate decay to it; raise it and --resume to continue",
    )
    p.add_argument(
        "--no-choose-postprocess",
        action="store_true",
        help="do not choose the checkpoints' clean-up (T_low, closing) on the validation volumes at the end",
    )
    p.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        help="intensity normalisation, stored in the checkpoints (default auto: percentile): percentile = "
        "each volume's 1st/99th percentiles of its scanned voxels to -1/+1 (robust to another scroll's "
        "brightness, anchored on background and papyrus whatever their shares); zscore = each volume's own "
        "mean/std over its scanned region; scale = fixed (x - 127.5) / 127.5 on the uint8 range; with "
        "--init the model's own is kept",
    )
    p.add_argument("--seed", type=int, help="default 0")
    p.add_argument("--loader-threads", type=int, help="batch prefetch threads (default 1)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    p.add_argument("--force", action="store_true", help="with --resume: accept changed settings")
    p.set_defaults(func=run)


def _requested_settings(args: argparse.Namespace) -> dict[str, Any]:
    """Settings given on the command line (or in --config), as TrainConfig fields."""
    from napari_vesuvius.core.training.config import AugmentConfig, TrainConfigError

    settings: dict[str, Any] = {}
    if args.config:
        try:
            settings.update(json.loads(Path(args.config).read_text()))
        except (OSError, json.JSONDecodeError) as error:
            raise TrainConfigError(f"{args.config}: cannot read settings ({error})") from error
    for option, name in _FIELDS.items():
        value = getattr(args, option)
        if value is not None:
            settings[name] = value
    if args.data:
        settings["data"] = [str(Path(d).resolve()) for d in args.data]
    if args.pair:
        settings["pairs"] = [[str(Path(i).resolve()), str(Path(lb).resolve())] for i, lb in args.pair]
    if args.init:
        settings["init"] = str(Path(args.init).resolve())
    if args.val_ids:
        settings["val_ids"] = list(args.val_ids)
    if args.no_deep_supervision:
        settings["deep_supervision"] = False
    if args.no_choose_postprocess:
        settings["choose_postprocess"] = False
    if args.no_augment:
        settings["augment"] = asdict(AugmentConfig.none())
    elif args.permute_axes:
        augment = dict(settings.get("augment") or {})
        augment["permute_axes"] = True
        settings["augment"] = augment
    return settings


def _build_config(args: argparse.Namespace) -> Any:
    """The TrainConfig to run, or None to resume with the stored one unchanged."""
    from napari_vesuvius.core.training.config import TrainConfig, TrainConfigError, load_config
    from napari_vesuvius.core.training.rundir import CONFIG_JSON

    settings = _requested_settings(args)
    config_path = Path(args.run_dir) / CONFIG_JSON
    if args.resume:
        if not settings:
            return None
        stored = load_config(config_path).to_dict()
        return TrainConfig.from_dict({**stored, **settings})
    required = ("epochs", "iterations_per_epoch")
    missing = [f"--{name.replace('_', '-')}" for name in required if name not in settings]
    if missing:
        raise TrainConfigError(f"a new run needs {' and '.join(missing)} (no hidden defaults)")
    if "patch_size" not in settings and settings.get("init"):
        settings["patch_size"] = list(_init_patch_size(settings["init"], settings.get("fold")))
    settings.setdefault("patch_size", [128, 128, 128])
    settings.setdefault("batch_size", 2)
    return TrainConfig.from_dict(settings)


def _init_patch_size(init: str, fold: int | None) -> tuple[int, int, int]:
    """The patch size of the model to fine-tune (the default patch size of such a run)."""
    from napari_vesuvius.core.inference.loading import load_model

    folds = None if fold is None or not Path(init).is_dir() else [fold]
    return tuple(int(p) for p in load_model(init, folds=folds).patch_size)  # type: ignore[return-value]


def check_run_dir(run_dir: Path, inputs: list[Any]) -> None:
    """Refuse a run folder that is a file or an input, or whose files would replace an input."""
    from napari_vesuvius.core.outputs import check_output_folder
    from napari_vesuvius.core.training import rundir
    from napari_vesuvius.core.training.postprocess_step import POSTPROCESS_JSON

    names = (rundir.CONFIG_JSON, rundir.METRICS_JSONL, rundir.CHECKPOINT_LAST, rundir.CHECKPOINT_BEST,
             rundir.TRAIN_STATE, rundir.TRAIN_LOG, rundir.PID_FILE, rundir.DATA_CHECK,
             POSTPROCESS_JSON)  # fmt: skip
    check_output_folder(run_dir, inputs=inputs, writes=names)


def run(args: argparse.Namespace) -> int:
    from napari_vesuvius.core.errors import CancelledError
    from napari_vesuvius.core.heap import keep_freed_memory
    from napari_vesuvius.core.progress import ConsoleProgress, StopFlag, run_job
    from napari_vesuvius.core.training import rundir
    from napari_vesuvius.core.training.config import load_config
    from napari_vesuvius.core.training.process import remove_pid_file, write_pid_file
    from napari_vesuvius.core.training.runner import train

    run_dir = Path(args.run_dir)
    pairs = [path for pair in args.pair or [] for path in pair]
    check_run_dir(run_dir, [*(args.data or []), *pairs, args.init, None if args.resume else args.config])
    config = _build_config(args)
    keep_freed_memory()  # this process exists for the run: reuse freed activations (core/heap.py)

    def say(message: str) -> None:
        print(f"\n{message}" if sys.stderr.isatty() else message, file=sys.stderr, flush=True)

    progress = ConsoleProgress("train", interval=10.0)  # plain lines in train.log
    job = train(config, run_dir, resume=args.resume, force=args.force, log=say)
    with StopFlag() as stop:
        try:
            first = next(job)  # runs the setup: config.json is written, the run folder exists
            used = load_config(run_dir / rundir.CONFIG_JSON)
            print("settings (stored in " + str(run_dir / rundir.CONFIG_JSON) + "):", file=sys.stderr)
            print(json.dumps(used.to_dict(), indent=2), file=sys.stderr, flush=True)
            write_pid_file(run_dir)  # pid + start time: lets napari re-attach, never to a reused pid
            progress(first)
            result = run_job(job, progress, stop)
        except CancelledError:
            print(f"cancelled: state saved in {run_dir}; continue with --resume", file=sys.stderr)
            return EXIT_CANCELLED
        finally:
            progress.close()
            remove_pid_file(run_dir)
    best = result.best_metric
    print(
        f"done: {result.epochs_done} epoch(s), {result.iterations_done} iterations"
        + (" (early stopping)" if result.stopped_early else "")
        + (" (stopped: time limit)" if result.stopped_by_time else "")
        + (f"; best {result.best_key} {best:.4f} at epoch {result.best_epoch}" if best is not None else "")
        + f"\nbest checkpoint: {result.checkpoint_best}",
        file=sys.stderr,
    )
    return 0
