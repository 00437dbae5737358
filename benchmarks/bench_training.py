"""Quality benchmark of training: train on synthetic fragments for a fixed wall-clock budget on this
machine, then predict + the model's default clean-up on fragments made with *other* seeds and report
the leaderboard score (mean, per volume and per term) and the training speed.

    python benchmarks/bench_training.py                 # 10-minute budget, writes docs/benchmarks.md
    python benchmarks/bench_training.py --minutes 2 --no-write

The budget is the run's own time limit (``TrainConfig.max_minutes``): it covers setup, training and the
per-epoch validation; the run stops at the first iteration boundary past it, and its learning rate
decays to it. The epoch count is only an upper bound. Two more fragments (seeds 900, 901;
``--val-volumes``) are the run's held-out validation volumes, on which the run chooses its
checkpoints' clean-up when it ends (``core/training/postprocess_step.py``); that choice is the default
clean-up for the checkpoint. The
final weights (``checkpoint_last.pt``) are evaluated with it and with the built-in defaults. For
reference the same table scores the test labels themselves through the built-in defaults and a blur +
Otsu threshold baseline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def _otsu_mask(image: np.ndarray, scan: np.ndarray) -> np.ndarray:
    """Blur (σ = 1) + Otsu threshold inside the scanned region: the no-learning baseline."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    blurred = ndimage.gaussian_filter(image.astype(np.float32), 1.0)
    return (blurred > threshold_otsu(blurred[scan])) & scan


def _topo_counts(results: list) -> str:
    """``p/g/m`` per homology dimension, summed over volumes."""
    parts = []
    for k in (0, 1, 2):
        p, g, m = (sum(r.topo_counts[k][key] for r in results) for key in ("p", "g", "m"))
        parts.append(f"H{k} {p}/{g}/{m}")
    return ", ".join(parts)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="training wall-clock budget")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--patch", type=int, default=32)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--shape", type=int, default=128, help="side of the synthetic volumes")
    parser.add_argument("--train-volumes", type=int, default=24)
    parser.add_argument("--test-volumes", type=int, default=3)
    parser.add_argument("--val-volumes", type=int, default=2, help="held out to choose the clean-up")
    parser.add_argument("--iterations-per-epoch", type=int, default=50)
    parser.add_argument("--lr", type=float, default=None)
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--gap-weight", type=float, default=1.0)
    parser.add_argument("--foreground-fraction", type=float, default=1 / 3, help="patches centred on surface")
    parser.add_argument("--val-patches", type=int, default=4, help="pseudo-Dice patches per epoch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--permute-axes", action="store_true", help="z/y/x permutation augmentation")
    parser.add_argument("--keep", help="keep the run folder here")
    parser.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = parser.parse_args()

    sys.path.insert(0, str(REPO))
    from benchmarks._report import markdown_table, peak_rss_mb, write_section
    from napari_vesuvius.core.heap import keep_freed_memory
    from napari_vesuvius.core.inference.engine import predict
    from napari_vesuvius.core.inference.loading import load_model
    from napari_vesuvius.core.metric import score_volume
    from napari_vesuvius.core.postprocess import PostprocessConfig, run_pipeline, scan_mask_from_ct
    from napari_vesuvius.core.postprocess.choice import model_choice
    from napari_vesuvius.core.progress import ConsoleProgress, run_job
    from napari_vesuvius.core.synthetic import make_fragment, write_training_folder
    from napari_vesuvius.core.training.config import AugmentConfig, TrainConfig
    from napari_vesuvius.core.training.monitor import read_metrics
    from napari_vesuvius.core.training.runner import train

    load = os.getloadavg()[0]
    work = Path(args.keep or tempfile.mkdtemp(prefix="bench_training_"))
    data = work / "data"
    shape = (args.shape,) * 3
    train_seeds = list(range(args.train_volumes))
    test_seeds = [1000 + i for i in range(args.test_volumes)]
    val_seeds = [900 + i for i in range(args.val_volumes)]
    if not data.exists():  # the tune seed is the run's held-out validation volume
        write_training_folder(data, shape, [*train_seeds, *val_seeds])
    heap_note = "applied" if keep_freed_memory() else "not available here"  # as `train` does (core/heap.py)
    # an upper bound (20 iterations/s): the time limit ends the run
    epochs = max(1, int(args.minutes * 60 * 20 / args.iterations_per_epoch))
    config = TrainConfig(
        epochs=epochs,
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
        augment=AugmentConfig(permute_axes=args.permute_axes),
    )
    run_dir = work / "run"
    start = time.perf_counter()
    result = run_job(train(config, run_dir, log=print), ConsoleProgress("train"))
    train_seconds = time.perf_counter() - start
    ends = [r for r in read_metrics(run_dir) if r["event"] == "epoch_end"]
    step_seconds = sum(r["epoch_train_seconds"] for r in ends)
    samples_per_s = sum(r["epoch_train_seconds"] * r["samples_per_s"] for r in ends) / step_seconds
    load_after = os.getloadavg()[0]

    chosen = [r for r in read_metrics(run_dir) if r["event"] == "postprocess"]
    model = load_model(run_dir / "checkpoint_last.pt")
    own = model_choice(model)
    if own is None:
        raise SystemExit(f"the run stored no clean-up choice: {chosen}")
    predict_seconds: list[float] = []

    def probability_of(seed: int) -> tuple[np.ndarray, object]:
        fragment = make_fragment(shape, seed=seed)
        began = time.perf_counter()
        prediction = predict(fragment.image, model, device="cpu", output_dtype="float32")
        predict_seconds.append(time.perf_counter() - began)
        return np.asarray(prediction.probability), fragment

    default = PostprocessConfig()
    methods = ["network, model's own", "network, built-in", "labels, built-in", "blur + Otsu, built-in"]
    scores: dict[str, list] = {name: [] for name in methods}
    rows = []
    for seed in test_seeds:
        probability, fragment = probability_of(seed)
        scan = scan_mask_from_ct(fragment.image)
        inputs = {
            "network, model's own": (probability, own.config),
            "network, built-in": (probability, default),
            "labels, built-in": ((fragment.labels == 1).astype(np.float32), default),
            "blur + Otsu, built-in": (_otsu_mask(fragment.image, scan).astype(np.float32), default),
        }
        for name, (values, cfg) in inputs.items():
            score = score_volume(run_pipeline(values, cfg, scan_mask=scan), fragment.labels)
            scores[name].append(score)
            if name.startswith("network"):
                terms = [score.score, score.topo, score.surface_dice, score.voi_score, score.voi_split]
                rows.append([f"seed {seed}", name, *terms, score.voi_merge, _topo_counts([score])])
    keys = ("score", "topo", "surface_dice", "voi_score", "voi_split", "voi_merge")
    for name in methods:
        means = [float(np.mean([getattr(s, k) for s in scores[name]])) for k in keys]
        rows.append(["**mean**", f"**{name}**", *means, _topo_counts(scores[name])])
    header = ["volume", "method, post-processing", "score", "TopoScore", "SurfaceDice", "VOI score",
              "VOI split", "VOI merge", "H_k pred/label/matched"]  # fmt: skip
    table = markdown_table(header, rows)
    mean_own = float(np.mean([s.score for s in scores["network, model's own"]]))
    mean_default = float(np.mean([s.score for s in scores["network, built-in"]]))
    ceiling = float(np.mean([s.score for s in scores["labels, built-in"]]))
    otsu = float(np.mean([s.score for s in scores["blur + Otsu, built-in"]]))
    choice_seconds = max(float(r.get("seconds", 0.0)) for r in chosen)
    last = ends[-1]
    stop = "its time limit" if result.stopped_by_time else "completing its epochs"
    chosen_text = (
        f"hysteresis T_low {own.config.t_low:g}/{own.config.t_high:g}, closing "
        f"z{own.config.closing_z}/xy{own.config.closing_xy}, dust < {own.config.dust_size}"
    )
    body = "\n".join(
        [
            f"Recipe: preset `{args.preset}`, patch {args.patch}³, batch {args.batch}, "
            f"{args.optimizer.upper()} lr {config.resolved().lr:g} with the poly schedule decaying to the "
            "time limit, deep supervision, "
            f"gap weight {args.gap_weight:g}, {args.foreground_fraction:.2f} of patches centred on surface, "
            f"augmentation: nnU-Net set{' + z/y/x permutations' if args.permute_axes else ''}; "
            f"trained on {len(train_seeds)} synthetic {args.shape}³ fragments (seeds {train_seeds[0]}–"
            f"{train_seeds[-1]}) with fragments {', '.join(map(str, val_seeds))} held out for validation. "
            "The run stopped on "
            f"{stop} after {result.iterations_done} iterations ({result.epochs_done} epochs × "
            f"{args.iterations_per_epoch} + {result.iterations_done % args.iterations_per_epoch}) in "
            f"{(train_seconds - choice_seconds) / 60:.2f} min (budget {args.minutes:g} min, setup and "
            "validation included); the final weights are evaluated. Then, as every training run does, it "
            f"chose the checkpoints' clean-up on the held-out fragments ({len(own.tried)} settings of T_low "
            f"× closing, {choice_seconds:.0f} s including its prediction): **{chosen_text}** "
            f"(validation score {own.score:.3f}; the built-in defaults {own.base_score:.3f}).",
            "",
            f"Training speed on this CPU: **{samples_per_s:.2f} samples/s** ({args.patch}³ patches, "
            f"forward + backward + step, channels_last_3d fp32, glibc heap kept for reuse as in the train "
            f"command: {heap_note}); last epoch: train loss "
            f"{last['train_loss']:.3f}, pseudo-Dice {last['pseudo_dice']:.3f}. Load average "
            f"{load:.1f} at the start, {load_after:.1f} after training; peak RSS {peak_rss_mb():.0f} MiB. "
            f"Inference {np.mean(predict_seconds):.1f} s per {args.shape}³ volume.",
            "",
            f"Leaderboard score of the final weights on {len(test_seeds)} unseen fragments "
            f"(seeds {test_seeds[0]}–{test_seeds[-1]}), sliding window with the engine defaults (step 0.5, "
            "Gaussian, no TTA). **Mean score with the model's own clean-up (what `submit`, the Export "
            f"dock and the demo apply to this checkpoint by default): {mean_own:.3f}**; with the built-in "
            f"defaults (hysteresis {default.t_low:g}/{default.t_high:g}, closing "
            f"z{default.closing_z}/xy{default.closing_xy}, dust < {default.dust_size}): {mean_default:.3f}. "
            f"The labels themselves through the built-in defaults score {ceiling:.3f}, the blur + Otsu "
            f"baseline {otsu:.3f} (ratio {mean_own / otsu:.2f}).",
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
