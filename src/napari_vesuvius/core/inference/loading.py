"""``load_model``: one entry point for built-in checkpoints and nnU-Net v2 trained-model folders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from napari_vesuvius.core.errors import CheckpointError

from .model_api import InferenceModel

DEFAULT_NNUNET_CHECKPOINT = "checkpoint_final.pth"


def is_nnunet_folder(path: str | Path) -> bool:
    """True for an nnU-Net ``<Trainer>__<Plans>__<config>`` folder (it holds ``plans.json``)."""
    path = Path(path)
    return path.is_dir() and (path / "plans.json").is_file()


def load_model(
    path: str | Path,
    *,
    folds: Sequence[int | str] | None = None,
    checkpoint: str = DEFAULT_NNUNET_CHECKPOINT,
) -> InferenceModel:
    """Load a model for inference.

    A file is a built-in checkpoint (``folds``/``checkpoint`` must be left at their defaults); a folder
    with ``plans.json`` is an nnU-Net v2 trained model, of which ``folds`` (default: all found) are
    ensembled from their ``checkpoint`` files.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(path, "model not found")
    if path.is_dir():
        if not is_nnunet_folder(path):
            raise CheckpointError(
                path,
                "folder is not an nnU-Net trained model (no plans.json); point at the "
                "<Trainer>__<Plans>__<configuration> folder or at a built-in checkpoint file",
            )
        from .nnunet import load_nnunet_model

        return load_nnunet_model(path, folds, checkpoint)
    if folds is not None:
        raise CheckpointError(path, "--folds only applies to nnU-Net model folders, not to a checkpoint file")
    if checkpoint != DEFAULT_NNUNET_CHECKPOINT:
        raise CheckpointError(path, "--checkpoint only applies to nnU-Net model folders")
    from .checkpoint import load_checkpoint

    return load_checkpoint(path)
