"""The demo pipeline: synthesize → train briefly → predict → clean up → export → score, headless.

It runs the same core functions as the widgets and the CLI, on a synthetic dataset in the challenge
layout, so a fresh install can check the whole loop end to end in a few minutes on a CPU. The test
volumes' ground truth (``test_labels_hidden/``) stands in for the leaderboard.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Generator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .progress import Progress


@dataclass(frozen=True)
class DemoSettings:
    """How big and how long the demo is; the defaults take a few minutes on a 2-core CPU."""

    workdir: Path
    shape: tuple[int, int, int] = (96, 96, 96)
    n_train: int = 4
    n_test: int = 2
    epochs: int = 4
    iterations_per_epoch: int = 25
    patch_size: tuple[int, int, int] = (48, 48, 48)
    batch_size: int = 2
    model_preset: str = "tiny"
    device: str = "auto"
    seed: int = 0


@dataclass
class DemoSummary:
    """What the demo produced, with timings per stage and the leaderboard score per test volume."""

    settings: dict[str, Any]
    dataset: Path
    run_dir: Path
    checkpoint: Path
    submission: Path
    scores: dict[str, dict[str, Any]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def mean_score(self) -> float:
        values = [entry["score"] for entry in self.scores.values()]
        return float(np.mean(values)) if values else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "dataset": str(self.dataset),
            "run_dir": str(self.run_dir),
            "checkpoint": str(self.checkpoint),
            "submission": str(self.submission),
            "scores": self.scores,
            "mean_score": self.mean_score,
            "timings": self.timings,
        }


def _stage(name: str, index: int, total: int) -> Progress:
    return Progress(index, total, name)


def iter_demo(settings: DemoSettings) -> Generator[Progress, None, DemoSummary]:
    """Job: run the whole pipeline in ``settings.workdir`` and return a :class:`DemoSummary`."""
    from napari_vesuvius.core.export.submit import iter_submit

    from .inference.models import ModelSpec
    from .metric import score_volume
    from .synthetic import TEST_LABELS_DIR, write_challenge_dataset
    from .training.config import TrainConfig
    from .training.runner import train

    workdir = Path(settings.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    dataset, run_dir, submission = workdir / "dataset", workdir / "run", workdir / "submission.zip"
    timings: dict[str, float] = {}
    stages = 5

    yield _stage("synthesize", 0, stages)
    start = time.perf_counter()
    write_challenge_dataset(
        dataset, n_train=settings.n_train, n_test=settings.n_test, shape=settings.shape, seed=settings.seed
    )
    timings["synthesize"] = time.perf_counter() - start

    yield _stage("train", 1, stages)
    start = time.perf_counter()
    config = TrainConfig(
        epochs=settings.epochs,
        iterations_per_epoch=settings.iterations_per_epoch,
        patch_size=settings.patch_size,
        batch_size=settings.batch_size,
        data=(str(dataset),),
        model_preset=settings.model_preset,
        device=settings.device,
        seed=settings.seed,
    )
    result = yield from train(config, run_dir, force=True)
    checkpoint = result.checkpoint_best if result.checkpoint_best.exists() else result.checkpoint_last
    timings["train"] = time.perf_counter() - start

    yield _stage("predict + clean up + export", 2, stages)
    start = time.perf_counter()
    # None: the clean-up the training run chose on its validation volume (built-in defaults if none)
    models = [ModelSpec(checkpoint)]
    exported = yield from iter_submit(dataset, models, submission, None, device=settings.device)
    timings["predict_cleanup_export"] = time.perf_counter() - start

    yield _stage("score", 3, stages)
    start = time.perf_counter()
    scores: dict[str, dict[str, Any]] = {}
    import tifffile

    with zipfile.ZipFile(submission) as archive:
        for name in sorted(archive.namelist()):
            volume_id = Path(name).stem
            mask = tifffile.imread(io.BytesIO(archive.read(name)))
            label = tifffile.imread(dataset / TEST_LABELS_DIR / f"{volume_id}.tif")
            scores[volume_id] = score_volume(mask, label).to_dict()
    timings["score"] = time.perf_counter() - start
    yield _stage("done", stages, stages)
    plain = {
        key: (list(value) if isinstance(value, tuple) else value) for key, value in asdict(settings).items()
    }
    plain["workdir"] = str(workdir)
    return DemoSummary(
        settings={
            **plain,
            "postprocess": exported.settings["postprocess"],
            "postprocess_source": exported.settings["postprocess_source"],
        },
        dataset=dataset,
        run_dir=run_dir,
        checkpoint=checkpoint,
        submission=submission,
        scores=scores,
        timings=timings,
    )
