"""Quality benchmark of training: train on synthetic fragments for a fixed wall-time budget on this
machine, then predict + default post-processing on fragments made with *other* seeds and report the
leaderboard score (mean and per term) and the training speed.

    python benchmarks/bench_training.py                 # 10-minute budget, writes docs/benchmarks.md
    python benchmarks/bench_training.py --minutes 2 --no-write

The recipe (model preset, patch, batch) is chosen up front; the number of iterations is derived from
a short speed measurement so that training (with its per-epoch validation) fits the budget. The
epoch and iteration counts used are printed and stored in the run folder's config.json as always.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _write_dataset(root: Path, shape: tuple[int, int, int], seeds: list[int]) -> None:
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.core.volume_io import write_volume

    (root / "train_images").mkdir(parents=True)
    (root / "train_labels").mkdir()
    for seed in seeds:
        fragment = make_fragment(shape, seed=seed)
        write_volume(root / "train_images" / f"{seed}.tif", fragment.image)
        write_volume(root / "train_labels" / f"{seed}.tif", fragment.labels)


def _seconds_per_iteration(config, data: Path, steps: int = 4) -> float:
    """Median seconds of one training iteration (batch sampling + forward + backward + step)."""
    from napari_vesuvius.core.training._trainer import Trainer
    from napari_vesuvius.core.training.data import collect_sources

    sources = collect_sources([str(data)], [])
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Trainer(config.resolved(), Path(tmp), sources, [], None)
        try:
            times = []
            for i in range(steps + 1):
                start = time.perf_counter()
                trainer.step(trainer.make_batch(i))
                times.append(time.perf_counter() - start)
        finally:
            trainer.close()
    return float(np.median(times[1:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-time budget")
    parser.add_argument("--preset", default="small")
    parser.add_argument("--patch", type=int, default=64)
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--shape", type=int, default=128, help="side of the synthetic volumes")
    parser.add_argument("--train-volumes", type=int, default=6)
    parser.add_argument("--test-volumes", type=int, default=3)
    parser.add_argument("--iterations-per-epoch", type=int, default=25)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--permute-axes", action="store_true", help="z/y/x permutation augmentation")
    parser.add_argument("--keep", help="keep the run folder here")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()

    from dataclasses import replace

    sys.path.insert(0, str(REPO))
    from benchmarks._report import markdown_table, peak_rss_mb, write_section
    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.metric import score_volume
    from napari_vesuvius.core.postprocess import PostprocessConfig, run_pipeline, scan_mask_from_ct
    from napari_vesuvius.core.progress import ConsoleProgress, run_job
    from napari_vesuvius.core.synthetic import make_fragment
    from napari_vesuvius.core.training.config import AugmentConfig, TrainConfig
    from napari_vesuvius.core.training.monitor import read_metrics
    from napari_vesuvius.core.training.runner import train

    load = os.getloadavg()[0]
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_training_"))
    data = work / "data"
    shape = (args.shape,) * 3
    train_seeds = list(range(args.train_volumes))
    test_seeds = [1000 + i for i in range(args.test_volumes)]
    if not data.exists():
        _write_dataset(data, shape, train_seeds)
    base = TrainConfig(
        epochs=1,
        iterations_per_epoch=args.iterations_per_epoch,
        patch_size=(args.patch,) * 3,
        batch_size=args.batch,
        data=(str(data),),
        model_preset=args.preset,
        device="cpu",
        optimizer=args.optimizer,
        lr=args.lr,
        val_fraction=1 / max(args.train_volumes, 2),
        val_patches=8,
        torch_threads=args.threads,
        augment=AugmentConfig(permute_axes=args.permute_axes),
    )
    per_iteration = _seconds_per_iteration(base, data)
    budget = args.minutes * 60
    # per epoch: iterations + validation (~8 forward passes ≈ 1.5 iterations) + checkpoint writes
    epoch_seconds = per_iteration * (args.iterations_per_epoch + 2) + 1.0
    epochs = max(1, math.floor(0.92 * budget / epoch_seconds))
    config = replace(base, epochs=epochs)
    plan = f"{epochs} epochs × {args.iterations_per_epoch} iterations"
    print(f"{per_iteration:.2f} s/iteration → {plan}", flush=True)
    run_dir = work / "run"
    start = time.perf_counter()
    result = run_job(train(config, run_dir, log=print), ConsoleProgress("train"))
    train_seconds = time.perf_counter() - start
    ends = [r for r in read_metrics(run_dir) if r["event"] == "epoch_end"]
    samples_per_s = sum(r["epoch_train_seconds"] * r["samples_per_s"] for r in ends) / sum(
        r["epoch_train_seconds"] for r in ends
    )

    model = load_model(run_dir / "checkpoint_best.pt")

    def probability_of(seed: int) -> tuple[np.ndarray, object]:
        fragment = make_fragment(shape, seed=seed)
        prediction = predict(fragment.image, model, device="cpu", output_dtype="float32")
        return prediction.probability, fragment

    # Post-processing chosen on a separate validation fragment (never on the test seeds): a small grid of
    # hysteresis T_low, closing radii and dust size, the parameters the winners tuned per model.
    tune_prob, tune_fragment = probability_of(900)
    tune_scan = scan_mask_from_ct(tune_fragment.image)
    grid = [
        PostprocessConfig(t_low=t_low, closing_z=closing_z, closing_xy=closing_xy, dust_size=dust)
        for t_low in (0.3, 0.5)
        for closing_z, closing_xy in ((0, 0), (1, 0), (2, 1))
        for dust in (100, 1000)
    ]
    tuned = max(
        grid,
        key=lambda cfg: (
            score_volume(run_pipeline(tune_prob, cfg, scan_mask=tune_scan), tune_fragment.labels).score
        ),
    )
    configs = {"default": PostprocessConfig(), "tuned": tuned}
    rows, scores = [], {name: [] for name in configs}
    for seed in test_seeds:
        probability, fragment = probability_of(seed)
        scan = scan_mask_from_ct(fragment.image)
        for name, cfg in configs.items():
            score = score_volume(run_pipeline(probability, cfg, scan_mask=scan), fragment.labels)
            scores[name].append(score)
            rows.append([f"seed {seed}", name, score.score, score.topo, score.surface_dice, score.voi_score,
                         score.voi_split, score.voi_merge])  # fmt: skip
    keys = ("score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge")
    for name in configs:
        rows.append(
            [
                "**mean**",
                f"**{name}**",
                *[float(np.mean([getattr(s, k) for s in scores[name]])) for k in keys],
            ]
        )
    header = [
        "volume",
        "post-processing",
        "score",
        "TopoScore",
        "SurfaceDice",
        "VOI score",
        "VOI split",
        "VOI merge",
    ]
    table = markdown_table(header, rows)
    last = ends[-1]
    body = "\n".join(
        [
            f"Recipe: preset `{args.preset}`, patch {args.patch}³, batch {args.batch}, SGD/poly (nnU-Net), "
            f"deep supervision, {config.epochs} epochs × {config.iterations_per_epoch} iterations "
            f"({result.iterations_done} iterations, {train_seconds / 60:.1f} min incl. validation), "
            f"trained on {len(train_seeds)} synthetic {args.shape}³ fragments "
            f"(seeds {train_seeds[0]}–{train_seeds[-1]}, one held out for validation); "
            f"best epoch {result.best_epoch} by {result.best_key}.",
            "",
            f"Training speed on this CPU: **{samples_per_s:.2f} samples/s** ({args.patch}³ patches; "
            f"{per_iteration:.2f} s per iteration measured before the run); "
            f"last epoch: train loss {last['train_loss']:.3f}, val loss {last['val_loss']:.3f}, "
            f"pseudo-Dice {last['pseudo_dice']:.3f}. Load average at start {load:.1f}; "
            f"peak RSS {peak_rss_mb():.0f} MiB.",
            "",
            f"Leaderboard score of the best checkpoint on {len(test_seeds)} unseen fragments "
            f"(seeds {test_seeds[0]}–{test_seeds[-1]}), sliding window (step 0.5, Gaussian), with the "
            "default post-processing (hysteresis 0.30/0.85, closing z2/xy1, dust < 100) and with the "
            f"post-processing chosen on a separate validation fragment (seed 900): T_low {tuned.t_low}, "
            f"closing z{tuned.closing_z}/xy{tuned.closing_xy}, dust < {tuned.dust_size}:",
            "",
            table,
        ]
    )
    command = "python benchmarks/bench_training.py " + " ".join(sys.argv[1:])
    if args.no_write:
        print(body)
    else:
        write_section("training", "Training quality (synthetic fragments, CPU)", body, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
