"""Stop a diverging run before it damages anything: non-finite loss, gradients or weights.

Checked in :class:`~._trainer.Trainer`:

* every step, *before* the optimiser updates the weights: the loss (all precisions) and the gradient
  norm (fp32/bf16; with fp16 the gradient scaler already skips steps whose gradients overflowed);
* before every save of ``checkpoint_best.pt``, ``checkpoint_last.pt`` and ``train_state.pt``: the
  weights themselves (the second line of defence, e.g. after an absurd learning rate).

Either raises :class:`NonFiniteError` naming the run folder and the iteration: the files of the last
good epoch stay as they were, so ``--resume --force`` with a lower learning rate continues from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch

from ..errors import VesuviusError


class TrainingError(VesuviusError):
    """A training run failed while training (not because of its settings or data files)."""

    def __init__(self, run_dir: str | Path, iteration: int, problem: str) -> None:
        self.run_dir = Path(run_dir)
        self.iteration = int(iteration)
        self.problem = problem
        super().__init__(f"{run_dir}: iteration {iteration}: {problem}")


class NonFiniteError(TrainingError):
    """The loss, the gradients or the weights of a run became NaN or infinite."""

    #: the ``reason`` of the ``error`` event in metrics.jsonl
    reason = "non_finite"


def stop_advice(saved_iteration: int | None, iterations_per_epoch: int) -> str:
    """What the user has after a NonFiniteError and what to try (part of its message)."""
    if saved_iteration:
        epoch = saved_iteration // iterations_per_epoch
        kept = f"the checkpoints and state of epoch {epoch} (iteration {saved_iteration}) are kept"
    else:
        kept = "no checkpoint had been written yet"
    return (
        f"training stopped and nothing was saved from these weights; {kept}. Check the data for NaN or "
        "extreme values, or resume with a lower learning rate (train --resume --force --lr ...)"
    )


def non_finite_tensors(tensors: Mapping[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors holding a NaN or an infinity (one device sync in all)."""
    floats = [(name, t.detach()) for name, t in tensors.items() if torch.is_floating_point(t) and t.numel()]
    if not floats:
        return []
    flags = torch.stack([~torch.isfinite(t).all() for _, t in floats]).cpu()
    return [name for (name, _), bad in zip(floats, flags.tolist(), strict=True) if bad]
