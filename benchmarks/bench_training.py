"""Quality benchmark of training: train on domain-randomised synthetic fragments for a fixed wall-clock
budget on this machine, then predict + the model's own clean-up on held-out volumes spanning the
randomised ranges and report the leaderboard score per sub-range, with the blur + Otsu baseline beside
every row, plus the original fragments of the earlier benchmark and the training speed.

    python benchmarks/bench_training.py                 # 10-minute budget, writes docs/benchmarks.md
    python benchmarks/bench_training.py --minutes 2 --no-write
    python benchmarks/bench_training.py --skip-train RUN/checkpoint_last.pt --no-write   # evaluate only

Training set (``--data``): ``randomised`` = ``--train-volumes`` volumes of
``core.synthetic.randomised_fragment`` (seeds 0..N-1, sub-range tags drawn); ``original`` = today's
``make_fragment`` set; ``mixed`` = ``make_fragment`` for the even seeds, randomised for the odd ones
(validation volumes randomised). The budget is the run's own time limit (``TrainConfig.max_minutes``: setup,
training and per-epoch validation; the learning rate decays to it). Two more volumes (seeds 900, 901;
randomised: one packed, one separated; ``--val-volumes``) are the run's held-out validation volumes, on
which it chooses its checkpoints' clean-up when it ends (``core/training/postprocess_step.py``): the
default clean-up of the checkpoint, which ``submit`` applies. The final weights are evaluated with it and
with the built-in defaults; the test set is described in ``benchmarks/_training_eval.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from napari_vesuvius.core.training.config import NORMALIZATIONS  # torch-free

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--shape", type=int, default=128, help="side of the synthetic volumes")
    parser.add_argument("--data", choices=("randomised", "original", "mixed"), default="randomised",
                        help="training volumes: randomised, make_fragment's or both")  # fmt: skip
    parser.add_argument("--train-volumes", type=int, default=24)
    parser.add_argument("--val-volumes", type=int, default=2, help="held out to choose the clean-up")
    parser.add_argument("--test-repeats", type=int, default=1,
                        help="randomised test volumes per combination of sub-ranges (8 of them)")  # fmt: skip
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--gap-weight", type=float, default=1.0)
    parser.add_argument("--foreground-fraction", type=float, default=1 / 3, help="patches centred on surface")
    parser.add_argument("--val-patches", type=int, default=4, help="pseudo-Dice patches per epoch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--normalization", choices=NORMALIZATIONS, default=None,
                        help="TrainConfig.normalization (left out: the config's default)")  # fmt: skip
    parser.add_argument("--augment", choices=("default", "nnunet"), default="default",
                        help="AugmentConfig defaults or AugmentConfig.nnunet()")  # fmt: skip
    parser.add_argument("--augment-set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one AugmentConfig field (JSON value, e.g. p_low_resolution=0.5, "
                        "brightness_range=[0.5,1.5]); repeatable")  # fmt: skip
    parser.add_argument("--permute-axes", action="store_true", help="z/y/x permutation augmentation")
    parser.add_argument("--skip-train", metavar="CKPT", help="evaluate this checkpoint instead of training")
    parser.add_argument("--keep", help="keep the data and run folders here")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    return parser.parse_args(argv)


def augment_config(args: argparse.Namespace) -> Any:
    """The run's ``AugmentConfig``: the preset, ``--permute-axes``, then each ``--augment-set``."""
    from napari_vesuvius.core.training.config import AugmentConfig

    values = asdict(AugmentConfig.nnunet() if args.augment == "nnunet" else AugmentConfig())
    values["permute_axes"] = bool(args.permute_axes) or values["permute_axes"]
    for item in args.augment_set:
        key, sep, text = item.partition("=")
        if not sep:
            raise SystemExit(f"--augment-set {item!r}: expected KEY=VALUE")
        try:
            values[key.strip()] = json.loads(text)
        except json.JSONDecodeError:
            values[key.strip()] = text
    return AugmentConfig.from_dict(values)


def augment_text(augment: Any) -> str:
    """The augmentation as the differences from ``AugmentConfig``'s defaults."""
    from napari_vesuvius.core.training.config import AugmentConfig

    base, mine = asdict(AugmentConfig()), asdict(augment)
    changed = [f"{k}={json.dumps(v)}" for k, v in mine.items() if base.get(k) != v]
    return "AugmentConfig defaults" + (f" with {', '.join(changed)}" if changed else "")


def write_data(root: Path, kind: str, shape: tuple[int, int, int], train_seeds: list[int],
               val_seeds: list[int]) -> None:  # fmt: skip
    """``root/train_images`` + ``train_labels`` (``<seed>.tif``): training + validation volumes."""
    from napari_vesuvius.core.synthetic import make_fragment, randomised_fragment, write_volume_tif

    partial = root.with_name(root.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    for folder in ("train_images", "train_labels"):
        (partial / folder).mkdir(parents=True)
    packing = ("packed", "separated")
    for seed in [*train_seeds, *val_seeds]:
        if kind == "original" or (kind == "mixed" and seed in train_seeds and seed % 2 == 0):
            fragment = make_fragment(shape, seed=seed)
        elif seed in val_seeds:  # validation: alternately packed and separated
            forced = {"packing": packing[val_seeds.index(seed) % 2]}
            fragment = randomised_fragment(shape, seed, subranges=forced)
        else:
            fragment = randomised_fragment(shape, seed)
        write_volume_tif(partial / "train_images" / f"{seed}.tif", fragment.image)
        write_volume_tif(partial / "train_labels" / f"{seed}.tif", fragment.labels)
    partial.rename(root)


def train_config(args: argparse.Namespace, data: Path, val_seeds: list[int]) -> Any:
    from napari_vesuvius.core.training.config import TrainConfig

    extra: dict[str, Any] = {}
    if args.normalization is not None:
        if "normalization" not in {f.name for f in fields(TrainConfig)}:
            raise SystemExit("--normalization: this TrainConfig has no normalization field yet")
        extra["normalization"] = args.normalization
    return TrainConfig(
        epochs=max(1, int(args.minutes * 60 * 20 / args.iterations_per_epoch)),  # the time limit ends it
        iterations_per_epoch=args.iterations_per_epoch,
        patch_size=(args.patch,) * 3,
        batch_size=args.batch,
        data=(str(data),),
        model_preset=args.preset,
        device="cpu",
        optimizer=args.optimizer,
        lr=args.lr,
        gap_weight=args.gap_weight,
        foreground_fraction=args.foreground_fraction,
        val_ids=tuple(str(seed) for seed in val_seeds),
        score_max_volumes=len(val_seeds),
        val_patches=args.val_patches,
        torch_threads=args.threads,
        max_minutes=args.minutes,
        augment=augment_config(args),
        **extra,
    )


def recipe_text(config: Any, data_name: str) -> str:
    """One paragraph: the recipe of the run (from its config) and its data."""
    normalization = getattr(config, "normalization", None)
    return (
        f"Recipe: preset `{config.model_preset}`, patch {config.patch_size[0]}³, batch {config.batch_size}, "
        f"{config.optimizer.upper()} lr {config.resolved().lr:g} with the poly schedule decaying to the time "
        f"limit, deep supervision, gap weight {config.gap_weight:g}, {config.foreground_fraction:.2f} of "
        f"patches centred on surface"
        + (f", normalisation `{normalization}`" if normalization is not None else "")
        + f"; augmentation: {augment_text(config.augment)}; data: {data_name} (validation volumes "
        f"{', '.join(config.val_ids)})."
    )


def speed_text(run_dir: Path, train_seconds: float | None, extra: str) -> str:
    """The training-speed paragraph, from the run's ``metrics.jsonl``."""
    from benchmarks._report import peak_rss_mb
    from napari_vesuvius.core.training.monitor import read_metrics

    if not (run_dir / "metrics.jsonl").exists():
        return "Training speed: not recorded (no metrics.jsonl beside the checkpoint)."
    records = read_metrics(run_dir)
    ends = [r for r in records if r["event"] == "epoch_end"]
    if not ends:
        return "Training speed: no finished epoch in metrics.jsonl."
    step_seconds = sum(r["epoch_train_seconds"] for r in ends)
    samples_per_s = sum(r["epoch_train_seconds"] * r["samples_per_s"] for r in ends) / max(step_seconds, 1e-9)
    chosen = [r for r in records if r["event"] == "postprocess" and "seconds" in r]
    choice_seconds = max((float(r["seconds"]) for r in chosen), default=0.0)
    last = ends[-1]
    took = f" in {(train_seconds - choice_seconds) / 60:.2f} min" if train_seconds is not None else ""
    return (
        f"Training speed on this CPU: **{samples_per_s:.2f} samples/s** (forward + backward + step, "
        f"channels_last_3d fp32); {len(ends)} epochs{took}, then {choice_seconds:.0f} s choosing the "
        f"clean-up; last epoch: train loss {last['train_loss']:.3f}, pseudo-Dice {last['pseudo_dice']:.3f}. "
        f"{extra}Peak RSS {peak_rss_mb():.0f} MiB."
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sys.path.insert(0, str(REPO))
    from benchmarks import _training_eval as ev
    from benchmarks._report import write_section
    from napari_vesuvius.core.heap import keep_freed_memory
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.postprocess import PostprocessConfig
    from napari_vesuvius.core.postprocess.choice import model_choice
    from napari_vesuvius.core.progress import ConsoleProgress, run_job
    from napari_vesuvius.core.training.config import load_config
    from napari_vesuvius.core.training.runner import train

    shape = (args.shape,) * 3
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_training_"))
    try:
        if args.skip_train:
            checkpoint = Path(args.skip_train)
            run_dir = checkpoint.parent
            train_seconds = None
            config = load_config(run_dir / "config.json") if (run_dir / "config.json").exists() else None
            data_name = Path(config.data[0]).name if config is not None and config.data else "unknown"
            run_text = f"Training skipped: evaluated `{checkpoint}`."
            extra = ""
        else:
            load = os.getloadavg()[0]
            train_seeds = list(range(args.train_volumes))
            val_seeds = [900 + i for i in range(args.val_volumes)]
            data_name = f"{args.data}-{args.shape}x{len(train_seeds)}"
            data = work / f"data-{data_name}"
            if not data.exists():
                write_data(data, args.data, shape, train_seeds, val_seeds)
            heap_note = "applied" if keep_freed_memory() else "not available here"  # as `train` does
            config = train_config(args, data, val_seeds)
            run_dir = work / "run"
            start = time.perf_counter()
            result = run_job(train(config, run_dir, log=print), ConsoleProgress("train"))
            train_seconds = time.perf_counter() - start
            checkpoint = run_dir / "checkpoint_last.pt"
            stop = "its time limit" if result.stopped_by_time else "completing its epochs"
            done, per_epoch = result.iterations_done, args.iterations_per_epoch
            run_text = (
                f"The run stopped on {stop} after {done} iterations ({result.epochs_done} epochs × "
                f"{per_epoch} + {done % per_epoch}) (budget {args.minutes:g} min, setup and validation "
                "included); the final weights are evaluated."
            )
            extra = (
                f"glibc heap kept for reuse as in the train command: {heap_note}. Load average {load:.1f} at "
                f"the start, {os.getloadavg()[0]:.1f} after training. "
            )

        model = load_model(checkpoint)
        own = model_choice(model)
        default = PostprocessConfig()
        if own is None:
            own_config, choice_text = default, "The checkpoint stores no clean-up choice: built-in defaults."
        else:
            c = own.config
            own_config = c
            choice_text = (
                f"Clean-up chosen on the validation volumes ({len(own.tried)} settings of T_low × closing): "
                f"**hysteresis T_low {c.t_low:g}/{c.t_high:g}, closing z{c.closing_z}/xy{c.closing_xy}, "
                f"dust < {c.dust_size}** (validation score {own.score:.3f}; built-in defaults "
                f"{own.base_score:.3f})."
            )
        volumes = ev.test_set(args.test_repeats)
        began = time.perf_counter()
        results = ev.evaluate(model, own_config, volumes, shape)
        eval_seconds = time.perf_counter() - began
        predict_seconds = float(np.mean([r.predict_seconds for r in results]))
        n_random = sum(v.kind == "randomised" for v in volumes)
        first, originals = ev.RANDOMISED_FIRST_SEED, ev.ORIGINAL_SEEDS
        body = "\n".join(
            [
                (recipe_text(config, data_name) + " " if config is not None else "") + run_text,
                choice_text,
                "",
                speed_text(run_dir, train_seconds, extra)
                + f" Inference {predict_seconds:.1f} s per {args.shape}³ volume; the whole evaluation "
                f"{eval_seconds:.0f} s.",
                "",
                f"Test volumes: {n_random} randomised {args.shape}³ volumes (seeds "
                f"{first}–{first + n_random - 1}), every combination of "
                f"{' × '.join(ev.subrange_axes())} sub-ranges {args.test_repeats} time(s), and the "
                f"{len(originals)} original fragments (`make_fragment` seeds {originals[0]}–{originals[-1]}, "
                f"{ev.TODAY_ORIGINAL} before issue 19). Sliding "
                "window with the engine defaults (step 0.5, Gaussian, no TTA). Network scores: final weights "
                "with the model's own clean-up (what `submit`, the Export dock and the demo apply) and with "
                f"the built-in defaults (hysteresis {default.t_low:g}/{default.t_high:g}, closing "
                f"z{default.closing_z}/xy{default.closing_xy}, dust < {default.dust_size}); blur + Otsu: "
                "Gaussian σ 1, Otsu threshold inside the scan, built-in defaults. Positive fraction: "
                "voxels the network's own clean-up marks, over the scanned voxels (mean, min–max).",
                "",
                ev.summary_table(results),
                "",
                *ev.verdicts(results),
                "",
                "Per volume:",
                "",
                ev.volume_table(results),
            ]
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    command = "python benchmarks/bench_training.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.no_write:
        print(body)
    else:
        title = "Training quality (domain-randomised synthetic volumes, CPU)"
        write_section("training", title, body, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
