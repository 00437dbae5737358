"""The state and steps of one training run (used by :func:`.runner.train`; imports torch)."""

from __future__ import annotations

import contextlib
import math
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_vesuvius.core.volume.io import open_volume

from ..inference import device as devices
from . import rundir
from .config import TrainConfig, TrainConfigError
from .data import VolumeSource
from .guard import NonFiniteError, non_finite_tensors, stop_advice
from .loss import SegmentationLoss
from .model import build_training_model, save_model_checkpoint
from .sampler import PatchSampler, TrainingVolume
from .validation import pseudo_dice, score_volumes, validation_batches

EMA_ALPHA = 0.9


def _precision(amp: str, device: torch.device) -> str:
    """Training precision: ``auto`` = bf16/fp16 autocast on CUDA, fp32 elsewhere."""
    if amp == "off":
        return "fp32"
    if amp != "auto":
        return amp
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def memory_format(device: torch.device) -> torch.memory_format:
    """``channels_last_3d`` on CPU, where oneDNN's 3D convolutions train about 1.6× faster in it
    (docs/benchmarks.md, "Training quality"); the default layout elsewhere."""
    return torch.channels_last_3d if device.type == "cpu" else torch.contiguous_format


class Trainer:
    """Network, optimiser, samplers and counters of a run; each method is one unit of work."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: Path,
        train_sources: Sequence[VolumeSource],
        val_sources: Sequence[VolumeSource],
        state: dict[str, Any] | None,
    ) -> None:
        self.cfg, self.run_dir, self.notes = config, run_dir, []
        try:
            self.device = devices.resolve_device(config.device)
        except ValueError as error:
            raise TrainConfigError(f"device: {error}") from error
        self.precision = _precision(config.amp, self.device)
        with open_volume(train_sources[0].image) as first:
            dtype = first.dtype
        self.model = build_training_model(config, dtype)
        self.intensity_profile = _intensity_profile(train_sources, self.notes)
        self.model.check_patch_size(config.patch_size)
        self.memory_format = memory_format(self.device)
        self.network = self.model.network.to(self.device, memory_format=self.memory_format)
        self.network.train()
        self.optimizer = self._make_optimizer()
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.loss_fn = SegmentationLoss(gap_weight=config.gap_weight)
        norm, gaps = self.model.normalization, config.gap_weight != 1.0
        self.train_volumes = [TrainingVolume(s, norm, with_gaps=gaps) for s in train_sources]
        if val_sources or gaps:  # validation and scoring need the plain labels
            self.val_volumes = [TrainingVolume(s, norm) for s in (val_sources or train_sources)]
        else:
            self.val_volumes = self.train_volumes
        patch, fg = config.patch_size, config.foreground_fraction
        self.sampler = PatchSampler(self.train_volumes, patch, fg, config.augment)
        self.val_sampler = PatchSampler(self.val_volumes, patch, fg, None)
        self._val_batches: list[tuple[np.ndarray, np.ndarray]] | None = None
        self.iteration = 0
        self.epoch_loss_sum, self.epoch_loss_count, self.epoch_train_seconds = 0.0, 0, 0.0
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.ema: float | None = None
        self.elapsed_before = 0.0
        self.started = time.monotonic()
        self.stopped_early = False
        self.scoring_unavailable = ""
        self.lr = float(config.lr or 0.0)
        #: iteration of the last train_state.pt written or resumed from (what a failure leaves behind)
        self.saved_iteration: int | None = None
        if state is not None:
            self._restore(state)
        else:
            random.seed(config.seed)
            torch.manual_seed(config.seed)
        self.previous_threads = torch.get_num_threads()
        if config.torch_threads:
            torch.set_num_threads(config.torch_threads)

    # ------------------------------------------------------------------ setup
    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg, params = self.cfg, self.network.parameters()
        if cfg.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay
            )
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)

    def _restore(self, state: dict[str, Any]) -> None:
        path = self.run_dir / rundir.TRAIN_STATE
        try:
            self.network.load_state_dict(state["model"], strict=True)
            self.optimizer.load_state_dict(state["optimizer"])
            if self.scaler is not None and state.get("scaler"):
                self.scaler.load_state_dict(state["scaler"])
        except (RuntimeError, KeyError, ValueError, TypeError) as error:
            from ..errors import CheckpointError

            problem = f"does not match this run's network/optimizer: {error}"[:400]
            raise CheckpointError(path, problem) from error
        self.iteration = int(state["iteration"])
        self.saved_iteration = self.iteration
        self.epoch_loss_sum = float(state.get("epoch_loss_sum", 0.0))
        self.epoch_loss_count = int(state.get("epoch_loss_count", 0))
        self.epoch_train_seconds = float(state.get("epoch_train_seconds", 0.0))
        self.best_metric = state.get("best_metric")
        self.best_epoch = state.get("best_epoch")
        self.ema = state.get("ema_pseudo_dice")
        self.elapsed_before = float(state.get("elapsed", 0.0))
        self.stopped_early = bool(state.get("stopped_early", False))
        if state.get("python_rng") is not None:
            random.setstate(_as_random_state(state["python_rng"]))
        if isinstance(state.get("torch_rng"), torch.Tensor):
            torch.set_rng_state(state["torch_rng"])
        if self.device.type == "cuda" and state.get("cuda_rng"):
            torch.cuda.set_rng_state_all(list(state["cuda_rng"]))
        self.notes.append(f"resumed at epoch {self.epochs_done}, iteration {self.iteration}")

    # ------------------------------------------------------------------ properties
    @property
    def epochs_done(self) -> int:
        return self.iteration // self.cfg.iterations_per_epoch

    @property
    def best_key(self) -> str:
        return "score" if self.cfg.score_every and not self.scoring_unavailable else "ema_pseudo_dice"

    def elapsed(self) -> float:
        return self.elapsed_before + time.monotonic() - self.started

    @property
    def time_limit_s(self) -> float | None:
        """The run's wall-clock limit in seconds (None: no limit)."""
        return float(self.cfg.max_minutes) * 60 if self.cfg.max_minutes > 0 else None

    def time_is_up(self) -> bool:
        limit = self.time_limit_s
        return limit is not None and self.elapsed() >= limit

    def schedule_progress(self) -> float:
        """Fraction of the schedule done: iterations, or elapsed time when a time limit is nearer."""
        done = self.iteration / self.cfg.total_iterations
        limit = self.time_limit_s
        if limit is not None:
            done = max(done, self.elapsed() / limit)
        return min(done, 1.0)

    def autocast(self) -> contextlib.AbstractContextManager:
        return devices.autocast(self.device, self.precision)

    # ------------------------------------------------------------------ work
    def make_batch(self, iteration: int) -> tuple[np.ndarray, np.ndarray]:
        """The batch of ``iteration`` (a pure function of the seed and the iteration number)."""
        rng = np.random.default_rng([int(self.cfg.seed), 1, int(iteration)])
        return self.sampler.batch(rng, self.cfg.batch_size)

    def step(self, batch: tuple[np.ndarray, np.ndarray]) -> float:
        """One optimiser step on ``batch``; returns its loss."""
        start = time.perf_counter()
        cfg = self.cfg
        self.lr = float(cfg.lr) * (1 - self.schedule_progress()) ** cfg.poly_exponent
        for group in self.optimizer.param_groups:
            group["lr"] = self.lr
        images = torch.from_numpy(batch[0]).to(self.device, non_blocking=True)
        images = images.contiguous(memory_format=self.memory_format)
        labels = torch.from_numpy(batch[1]).to(self.device, non_blocking=True)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast():
            outputs = self.network(images)
        loss, _ = self.loss_fn(outputs, labels)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.unscale_(self.optimizer)
        else:
            loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(self.network.parameters(), cfg.grad_clip)
        # one device sync for both checks, before anything touches the weights (see .guard)
        value, grad_norm = torch.stack([loss.detach().float(), norm.detach().float()]).tolist()
        if not math.isfinite(value):
            raise self._non_finite(f"the loss is {value}")
        if self.scaler is not None:  # fp16: the scaler skips a step whose gradients overflowed
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            if not math.isfinite(grad_norm):
                raise self._non_finite(f"the gradients are non-finite (norm {grad_norm})")
            self.optimizer.step()
        self.iteration += 1
        self.epoch_loss_sum += value
        self.epoch_loss_count += 1
        self.epoch_train_seconds += time.perf_counter() - start
        return value

    def _validate(self) -> tuple[float, float, dict[str, Any] | None]:
        epoch = self.epochs_done
        self.network.eval()
        self.model.set_deep_supervision(False)
        try:
            if self._val_batches is None:
                self._val_batches = validation_batches(
                    self.val_sampler, self.cfg.val_patches, self.cfg.batch_size, self.cfg.seed
                )
            val_loss, dice = pseudo_dice(
                self.network, self._val_batches, self.device, self.autocast, self.memory_format
            )
            score = None
            due = self.cfg.score_every and (epoch % self.cfg.score_every == 0 or epoch == self.cfg.epochs)
            if due and not self.scoring_unavailable:
                volumes = self.val_volumes[: self.cfg.score_max_volumes]
                score, why = score_volumes(
                    self.network,
                    self.cfg.patch_size,
                    self.model.normalization,
                    volumes,
                    str(self.device),
                    self.cfg.batch_size,
                )
                if score is None:
                    self.scoring_unavailable = why
                    self.notes.append(why)
        finally:
            self.model.set_deep_supervision(self.cfg.deep_supervision)
            self.network.train()
        return val_loss, dice, score

    def end_epoch(self) -> dict[str, Any]:
        """Validate, update best/EMA/early stopping, save checkpoints; returns the epoch_end record."""
        cfg, epoch = self.cfg, self.epochs_done
        val_loss, dice, score = self._validate()
        if np.isfinite(dice):
            self.ema = dice if self.ema is None else EMA_ALPHA * self.ema + (1 - EMA_ALPHA) * dice
        candidate = score["mean"]["score"] if score is not None else None
        if self.best_key == "ema_pseudo_dice":
            candidate = self.ema
        improved = candidate is not None and (self.best_metric is None or candidate > self.best_metric)
        if improved:
            self.best_metric, self.best_epoch = float(candidate), epoch
        train_loss = self.epoch_loss_sum / max(self.epoch_loss_count, 1)
        record = {
            "epoch": epoch,
            "epochs": cfg.epochs,
            "iteration": self.iteration,
            "iterations": cfg.total_iterations,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "pseudo_dice": dice,
            "ema_pseudo_dice": self.ema,
            "score": None if score is None else score["mean"].get("score"),
            "score_terms": None if score is None else score["mean"],
            "lr": self.lr,
            "elapsed": self.elapsed(),
            "epoch_train_seconds": self.epoch_train_seconds,
            "samples_per_s": self.epoch_loss_count * cfg.batch_size / max(self.epoch_train_seconds, 1e-9),
            "best": bool(improved),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "best_key": self.best_key,
        }
        self.epoch_loss_sum, self.epoch_loss_count, self.epoch_train_seconds = 0.0, 0, 0.0
        if improved:
            self._save_checkpoint(rundir.CHECKPOINT_BEST, record)
        self._save_checkpoint(rundir.CHECKPOINT_LAST, record)
        if cfg.patience and self.best_epoch is not None and epoch - self.best_epoch >= cfg.patience:
            self.stopped_early = True
            self.notes.append(f"early stopping: no improvement for {cfg.patience} epochs")
        return record

    def _non_finite(self, problem: str, iteration: int | None = None) -> NonFiniteError:
        """The error that stops a run whose loss, gradients or weights became NaN/Inf (see .guard)."""
        advice = stop_advice(self.saved_iteration, self.cfg.iterations_per_epoch)
        at = self.iteration + 1 if iteration is None else iteration  # the step being computed
        return NonFiniteError(self.run_dir, at, f"{problem}; {advice}")

    def check_weights(self, target: str) -> None:
        """Raise NonFiniteError (``target`` not written) when a weight or buffer is NaN/Inf."""
        bad = non_finite_tensors(self.network.state_dict())
        if bad:
            shown = ", ".join(bad[:5]) + (f" ... ({len(bad)} tensors)" if len(bad) > 5 else "")
            problem = f"the weights are non-finite ({shown}), {target} not written"
            raise self._non_finite(problem, self.iteration)

    def _save_checkpoint(self, name: str, record: dict[str, Any] | None) -> None:
        self.check_weights(name)  # never replace a good checkpoint with NaN weights
        meta = {
            "epoch": self.epochs_done,
            "iteration": self.iteration,
            "epochs": self.cfg.epochs,
            "iterations_per_epoch": self.cfg.iterations_per_epoch,
            "run_config": self.cfg.to_dict(),
        }
        if self.intensity_profile is not None:  # what check_intensity compares new volumes with
            meta["training_intensity"] = self.intensity_profile
        if record is not None:
            for key in ("pseudo_dice", "ema_pseudo_dice", "score", "val_loss", "train_loss"):
                value = record.get(key)
                meta[key] = None if value is None or not np.isfinite(value) else float(value)
        self.model.set_deep_supervision(False)
        try:
            save_model_checkpoint(self.run_dir / name, self.model, self.cfg.patch_size, meta)
        finally:
            self.model.set_deep_supervision(self.cfg.deep_supervision)

    def save_last_checkpoint(self) -> None:
        """``checkpoint_last.pt`` of the current weights (mid-epoch, on cancel)."""
        self._save_checkpoint(rundir.CHECKPOINT_LAST, None)

    def save_state(self) -> None:
        """Write ``train_state.pt``: everything :meth:`_restore` needs to continue exactly here."""
        self.check_weights(rundir.TRAIN_STATE)
        state = {
            "config": self.cfg.to_dict(),
            "epoch": self.epochs_done,
            "iteration": self.iteration,
            "epoch_loss_sum": self.epoch_loss_sum,
            "epoch_loss_count": self.epoch_loss_count,
            "epoch_train_seconds": self.epoch_train_seconds,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "ema_pseudo_dice": self.ema,
            "elapsed": self.elapsed(),
            "stopped_early": self.stopped_early,
            "model": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "optimizer": self.optimizer.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "python_rng": _plain_random_state(random.getstate()),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else None,
        }
        rundir.save_train_state(self.run_dir / rundir.TRAIN_STATE, state)
        self.saved_iteration = self.iteration

    def close(self) -> None:
        """Give back what the run changed in this process (torch's thread count)."""
        torch.set_num_threads(self.previous_threads)

    def progress_record(self, loss: float) -> dict[str, Any]:
        return {
            "epoch": (self.iteration - 1) // self.cfg.iterations_per_epoch + 1,
            "epochs": self.cfg.epochs,
            "iteration": self.iteration,
            "iterations": self.cfg.total_iterations,
            "loss": loss,
            "lr": self.lr,
            "elapsed": self.elapsed(),
        }

    def progress_message(self, loss: float) -> str:
        ipe = self.cfg.iterations_per_epoch
        in_epoch = (self.iteration - 1) % ipe + 1
        epoch = (self.iteration - 1) // ipe + 1
        limit = self.time_limit_s
        left = "" if limit is None else f" ({max(limit - self.elapsed(), 0.0) / 60:.1f} min left)"
        return f"epoch {epoch}/{self.cfg.epochs} it {in_epoch}/{ipe} loss {loss:.4f}{left}"


def _intensity_profile(sources: Sequence[VolumeSource], notes: list[str]) -> dict[str, Any] | None:
    """The training volumes' intensity profile (a few blocks of each, see inference.ood), as plain data."""
    from ..inference.ood import training_profile

    try:
        return training_profile([s.image for s in sources]).to_dict()
    except ValueError as error:  # no scanned voxels in the sampled blocks: nothing to compare with later
        notes.append(f"no training intensity profile recorded ({error})")
        return None


def _plain_random_state(state: tuple) -> list:
    version, internal, gauss = state
    return [int(version), [int(v) for v in internal], gauss]


def _as_random_state(state: Sequence[Any]) -> tuple:
    version, internal, gauss = state
    return (int(version), tuple(int(v) for v in internal), gauss)
