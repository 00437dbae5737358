"""The training job: a generator yielding :class:`Progress` per iteration (see docs/architecture.md).

``train(config, run_dir)`` first checks every training volume (headers, label values, NaN/Inf:
:mod:`..dataset_check`; files that passed are remembered in ``data_check.json``) and refuses the run,
listing every bad file, before anything is trained. It then trains for exactly
``epochs × iterations_per_epoch`` iterations (fewer only with early stopping or when the
``max_minutes`` wall-clock limit is reached: the run then stops at the next iteration boundary, saves
``checkpoint_last.pt`` and its state and logs ``finished`` with reason ``time_limit``; raise the limit
and resume to continue), validates after every epoch, keeps the run folder (:mod:`.rundir`) up to date
and returns a :class:`TrainResult`. Closing the generator (widget Cancel, CLI SIGTERM through
``run_job``) stops after the current iteration: ``checkpoint_last.pt`` and ``train_state.pt`` are saved
and a ``cancelled`` event is logged, so ``resume=True`` continues at that very iteration. A hard kill
loses at most the epoch in progress (state is saved at every epoch end). Before validating an epoch a
``validating`` event is logged, so a follower can say so during the (possibly long) validation.

Each batch is drawn from ``numpy.random.default_rng([seed, 1, iteration])``, so batches do not depend
on earlier ones: prefetch threads stay deterministic and a resumed run sees the batches an
uninterrupted run would have seen. Learning rate: poly schedule ``lr·(1 − i/total)^0.9`` per iteration;
with a time limit ``i/total`` becomes ``max(i/total, elapsed/limit)`` so the rate decays to the limit.

A loss, gradient or weight that becomes NaN/Inf stops the run with :class:`.guard.NonFiniteError`
before the weights are updated or saved (an ``error`` event with ``reason: non_finite``): the
checkpoints and state of the last good epoch are never replaced. Irregularities of the data folders
(csv ids without volumes, duplicate ids ...) are logged as notes of the ``started`` event.
"""

from __future__ import annotations

import os
import time
import warnings
from collections.abc import Callable, Generator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..dataset_check import CheckItem, iter_validate_volumes
from ..errors import VesuviusWarning
from ..progress import Progress, scaled
from . import rundir
from .config import TrainConfig, TrainConfigError, load_config, save_config
from .data import collect_sources, split_sources
from .guard import NonFiniteError, TrainingError

Batch = tuple[np.ndarray, np.ndarray]


@dataclass(frozen=True)
class TrainResult:
    """What a finished (or early-stopped) run returns."""

    run_dir: Path
    epochs_done: int
    iterations_done: int
    best_metric: float | None
    best_epoch: int | None
    best_key: str
    stopped_early: bool
    #: the run stopped because its ``max_minutes`` limit was reached
    stopped_by_time: bool = False
    #: the clean-up chosen for each checkpoint file name (empty: not chosen, see ``choose_postprocess``)
    postprocess: dict[str, Any] = field(default_factory=dict)

    @property
    def checkpoint_best(self) -> Path:
        return self.run_dir / rundir.CHECKPOINT_BEST

    @property
    def checkpoint_last(self) -> Path:
        return self.run_dir / rundir.CHECKPOINT_LAST


class _Prefetcher:
    """Computes upcoming batches in background threads (0 threads: on demand)."""

    def __init__(self, make: Callable[[int], Batch], start: int, end: int, threads: int) -> None:
        self.make, self.end = make, end
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="train-batches") if threads > 0 else None
        self.depth = 2 * threads
        self.futures: dict[int, Future[Batch]] = {}
        self.next = start

    def get(self, iteration: int) -> Batch:
        if self.pool is None:
            return self.make(iteration)
        self.next = max(self.next, iteration)
        while self.next < min(iteration + 1 + self.depth, self.end):
            self.futures[self.next] = self.pool.submit(self.make, self.next)
            self.next += 1
        return self.futures.pop(iteration).result()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.futures.clear()


def _prepare_config(
    config: TrainConfig | None, run_dir: Path, resume: bool, force: bool
) -> tuple[TrainConfig, dict[str, Any] | None]:
    """Resolve the config to run and the state to continue from (None: start fresh)."""
    config_path = run_dir / rundir.CONFIG_JSON
    state_path = run_dir / rundir.TRAIN_STATE
    from .process import running_pid

    other = running_pid(run_dir)
    if other is not None and other != os.getpid():
        raise TrainConfigError(
            f"{run_dir}: a training process (pid {other}) is already running in this folder"
        )
    if config_path.exists() and not resume and not state_path.exists() and config is not None:
        # a run that never reached its first saved state (failed setup, killed early): start it over
        config_path.unlink()
        (run_dir / rundir.METRICS_JSONL).unlink(missing_ok=True)
    if not config_path.exists():
        if resume:
            raise TrainConfigError(f"{run_dir}: nothing to resume (no {rundir.CONFIG_JSON})")
        if config is None:
            raise TrainConfigError("no training settings given")
        run_dir.mkdir(parents=True, exist_ok=True)
        resolved = config.resolved()
        save_config(resolved, config_path)
        return resolved, None
    if not resume:
        raise TrainConfigError(
            f"{run_dir}: already holds a training run ({rundir.CONFIG_JSON}); "
            "resume it or choose a new run folder"
        )
    stored = load_config(config_path)
    if config is not None:
        requested = config.resolved()
        changes = stored.differences(requested)
        if changes and not force:
            raise TrainConfigError(
                f"{config_path}: the settings differ from the run being resumed (use force to accept):\n  "
                + "\n  ".join(changes)
            )
        if changes or requested != stored:
            save_config(requested, config_path)
        stored = requested
    state = rundir.load_train_state(state_path) if state_path.exists() else None
    limit_s = float(stored.max_minutes) * 60
    if state is not None and limit_s > 0 and float(state.get("elapsed", 0.0)) >= limit_s:
        raise TrainConfigError(
            f"{run_dir}: the run already used its time limit ({stored.max_minutes:g} min, "
            f"{float(state['elapsed']) / 60:.1f} min done); raise max_minutes (or set 0) to continue"
        )
    if state is not None and int(state["iteration"]) > stored.total_iterations:
        raise TrainConfigError(
            f"{state_path}: the run already did {state['iteration']} iterations, more than the "
            f"{stored.total_iterations} now configured"
        )
    return stored, state


def train(
    config: TrainConfig | None,
    run_dir: str | Path,
    *,
    resume: bool = False,
    force: bool = False,
    log: Callable[[str], Any] | None = None,
) -> Generator[Progress, None, TrainResult]:
    """Job: train (or resume, ``config`` None = the stored one) in ``run_dir``; see the module docstring."""
    from ._trainer import Trainer

    run_dir = Path(run_dir)
    cfg, state = _prepare_config(config, run_dir, resume, force)
    say = log if log is not None else (lambda message: None)
    metrics = rundir.MetricsLog(run_dir / rundir.METRICS_JSONL)
    if resume:
        metrics.truncate_after(0 if state is None else int(state["epoch"]))
    try:
        sources, data_notes = _collect(cfg)
        train_sources, val_sources, note = split_sources(sources, cfg.val_fraction, cfg.seed, cfg.val_ids)
        for line in data_notes:
            say(f"warning: {line}")
        items = [CheckItem(s.image, s.label) for s in sources]
        check = iter_validate_volumes(items, "training data", cache=run_dir / rundir.DATA_CHECK)
        yield from check
        trainer = Trainer(cfg, run_dir, train_sources, val_sources, state)
    except GeneratorExit:
        done = 0 if state is None else int(state["iteration"])
        metrics.write("cancelled", message="cancelled while checking the training data", iteration=done)
        raise
    except BaseException as error:
        metrics.write("error", message=f"{type(error).__name__}: {error}")
        raise
    for line in [note, *trainer.notes]:  # the data warnings were said before the check
        say(line)
    notes = [note, *data_notes, *trainer.notes]
    metrics.write(
        "started",
        resumed=state is not None,
        epoch=trainer.epochs_done,
        iteration=trainer.iteration,
        epochs=cfg.epochs,
        iterations_per_epoch=cfg.iterations_per_epoch,
        device=str(trainer.device),
        amp=trainer.precision,
        train_volumes=[s.id for s in train_sources],
        val_volumes=[s.id for s in val_sources],
        notes=notes,
        max_minutes=cfg.max_minutes,
        elapsed=trainer.elapsed(),
    )
    total = cfg.total_iterations
    prefetcher = _Prefetcher(trainer.make_batch, trainer.iteration, total, cfg.loader_threads)
    last_progress_log = 0.0
    stopped_by_time = False
    try:
        yield Progress(trainer.iteration, total, "starting")
        while trainer.iteration < total and not trainer.stopped_early:
            if trainer.time_is_up():
                stopped_by_time = True
                break
            loss = trainer.step(prefetcher.get(trainer.iteration))
            if trainer.iteration % cfg.iterations_per_epoch == 0:
                # validation takes a while: say so, so a follower shows "validating…", not a stalled ETA
                metrics.write(
                    "validating", epoch=trainer.epochs_done, epochs=cfg.epochs, iteration=trainer.iteration,
                    iterations=total, elapsed=trainer.elapsed(),
                )  # fmt: skip
                record = trainer.end_epoch()
                metrics.write("epoch_end", **record)
                trainer.save_state()
                say(_epoch_line(record))
            now = time.monotonic()
            if now - last_progress_log >= 2.0:
                last_progress_log = now
                metrics.write("progress", **trainer.progress_record(loss))
            yield Progress(trainer.iteration, total, trainer.progress_message(loss))
    except GeneratorExit:
        prefetcher.close()
        try:
            if trainer.iteration % cfg.iterations_per_epoch != 0 or trainer.iteration == 0:
                trainer.save_last_checkpoint()
            trainer.save_state()
        except TrainingError as error:  # non-finite weights: nothing saved, say why
            _log_error(metrics, trainer, error)
            raise
        metrics.write("cancelled", epoch=trainer.epochs_done, iteration=trainer.iteration, lr=trainer.lr)
        say(f"cancelled at iteration {trainer.iteration}/{total}: state saved, resume to continue")
        raise
    except BaseException as error:
        _log_error(metrics, trainer, error)
        raise
    finally:
        prefetcher.close()
        trainer.close()
    if stopped_by_time:
        if trainer.iteration % cfg.iterations_per_epoch != 0 or trainer.iteration == 0:
            trainer.save_last_checkpoint()
        trainer.save_state()
        say(
            f"stopped: time limit of {cfg.max_minutes:g} min reached at iteration "
            f"{trainer.iteration}/{total} ({trainer.elapsed() / 60:.1f} min)"
        )
    choices: dict[str, Any] = {}
    if cfg.choose_postprocess:
        choices = yield from _choose_postprocess(cfg, run_dir, val_sources, str(trainer.device), metrics, say)
    result = TrainResult(
        run_dir=run_dir,
        epochs_done=trainer.epochs_done,
        iterations_done=trainer.iteration,
        best_metric=trainer.best_metric,
        best_epoch=trainer.best_epoch,
        best_key=trainer.best_key,
        stopped_early=trainer.stopped_early,
        stopped_by_time=stopped_by_time,
        postprocess=choices,
    )
    reason = "time_limit" if stopped_by_time else "early_stopping" if result.stopped_early else "completed"
    metrics.write(
        "finished",
        epoch=result.epochs_done,
        iteration=result.iterations_done,
        best_metric=result.best_metric,
        best_epoch=result.best_epoch,
        best_key=result.best_key,
        stopped_early=result.stopped_early,
        reason=reason,
        elapsed=trainer.elapsed(),
        **(
            {"stopped": "time limit", "message": f"stopped: time limit ({cfg.max_minutes:g} min)"}
            if stopped_by_time
            else {}
        ),
    )
    return result


def _collect(cfg: TrainConfig) -> tuple[list[Any], list[str]]:
    """The run's sources and the data warnings met on the way (csv ids without volumes ...), as notes:
    they are said once, through the run's log, instead of as Python warnings."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", VesuviusWarning)
        sources = collect_sources(cfg.data, cfg.pairs)
    notes = []
    for warning in caught:
        if issubclass(warning.category, VesuviusWarning):
            notes.append(str(warning.message))
        else:
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    return sources, list(dict.fromkeys(notes))


def _log_error(metrics: rundir.MetricsLog, trainer: Any, error: BaseException) -> None:
    """The ``error`` event of a run that failed while training (``reason`` for a non-finite run)."""
    extra = {"reason": error.reason} if isinstance(error, NonFiniteError) else {}
    iteration = error.iteration if isinstance(error, TrainingError) else trainer.iteration
    metrics.write(
        "error",
        epoch=trainer.epochs_done,
        iteration=iteration,
        message=f"{type(error).__name__}: {error}",
        **extra,
    )


def _choose_postprocess(
    cfg: TrainConfig,
    run_dir: Path,
    val_sources: list[Any],
    device: str,
    metrics: rundir.MetricsLog,
    say: Callable[[str], Any],
) -> Generator[Progress, None, dict[str, Any]]:
    """Choose and store the checkpoints' clean-up (:mod:`.postprocess_step`), logging the outcome.

    The trained weights are saved already: a failure here is logged and reported, not raised, and a
    cancel leaves the checkpoints as they were (each is rewritten atomically).
    """
    from .postprocess_step import iter_choose_run_postprocess

    job = iter_choose_run_postprocess(
        run_dir, val_sources, device=device, batch_size=cfg.batch_size,
        max_volumes=cfg.score_max_volumes, say=say,
    )  # fmt: skip
    total = cfg.total_iterations
    started = time.perf_counter()
    if val_sources:
        count = min(len(val_sources), cfg.score_max_volumes)
        metrics.write("postprocess", message=f"choosing the clean-up on {count} validation volume(s)")
    try:
        choices = yield from scaled(job, total, 0, total, "")
    except GeneratorExit:
        metrics.write("cancelled", message="cancelled while choosing the clean-up; the weights are saved")
        raise
    except Exception as error:  # the run itself succeeded: report why the choice failed, do not raise
        message = f"clean-up not chosen: {type(error).__name__}: {error}"
        say(message)
        metrics.write("postprocess", error=message[:500])
        return {}
    for name, choice in choices.items():
        seconds = time.perf_counter() - started
        metrics.write("postprocess", checkpoint=name, seconds=seconds, **choice.to_metadata())
    return choices


def _epoch_line(record: dict[str, Any]) -> str:
    def num(value: Any) -> str:
        missing = value is None or (isinstance(value, float) and not np.isfinite(value))
        return "n/a" if missing else f"{value:.4f}"

    score = f" score {num(record['score'])}" if record.get("score") is not None else ""
    return (
        f"epoch {record['epoch']}/{record['epochs']}: train_loss {num(record['train_loss'])} "
        f"val_loss {num(record['val_loss'])} pseudo_dice {num(record['pseudo_dice'])}{score} "
        f"lr {record['lr']:.2e} {record['samples_per_s']:.1f} samples/s{' *best*' if record['best'] else ''}"
    )
