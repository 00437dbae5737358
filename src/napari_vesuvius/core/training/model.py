"""The network a run trains: a fresh built-in U-Net, or one loaded from a checkpoint to fine-tune.

``--init`` accepts whatever :func:`~napari_vesuvius.core.inference.loading.load_model` loads: a
built-in checkpoint (same architecture, its normalisation and patch size) or an nnU-Net v2 trained
model folder (one fold: ``fold`` or the first found; its normalisation and patch size from the plans).
Imports torch at module level: only the runner imports this module.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import CheckpointError
from ..inference.model_api import FITTED_KINDS, Normalization
from ..inference.unet import UNetConfig, build_unet, preset
from .config import LEGACY_NORMALIZATION, TrainConfig, TrainConfigError


@dataclass
class TrainingModel:
    """A trainable network plus what a checkpoint needs to rebuild and run it."""

    network: torch.nn.Module
    normalization: Normalization
    unet_config: UNetConfig | None = None
    nnunet: dict[str, Any] | None = None
    default_patch_size: tuple[int, int, int] | None = None
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "built-in" if self.unet_config is not None else "nnunet"

    def set_deep_supervision(self, enabled: bool) -> None:
        """Switch the extra low-resolution outputs on (training) or off (validation, checkpoints)."""
        if self.unet_config is not None:
            self.unet_config = replace(self.unet_config, deep_supervision=enabled)
            self.network.config = self.unet_config  # the built-in U-Net reads its config in forward
        else:
            decoder = getattr(self.network, "decoder", None)
            if decoder is not None and hasattr(decoder, "deep_supervision"):
                decoder.deep_supervision = enabled

    def check_patch_size(self, patch_size: tuple[int, int, int]) -> None:
        if self.unet_config is not None:
            try:
                self.unet_config.check_patch_size(patch_size)
            except ValueError as error:
                raise TrainConfigError(f"patch_size: {error}") from error


def auto_normalization() -> str:
    """What ``normalization="auto"`` trains a fresh model with: the one place of that decision.

    ``percentile`` over the scanned region, for every dtype: a new scroll's scan energy, exposure and
    reconstruction change the raw intensities by a scale and an offset, which a per-volume fit removes
    and a fixed scale passes on to the network. The 1st/99th percentiles sit on background and papyrus
    whatever their shares, where a z-score's mean and std move with the packing (how much of the volume
    is papyrus): measured with ``benchmarks/bench_training.py`` on the domain-randomised set, percentile
    scored 0.73 on the original fragments against 0.46 for the z-score (same recipe and budget). Leaving
    the air outside the scan cylinder out of the statistics keeps them independent of how much of it a
    volume holds.
    """
    return "percentile"


def resolve_normalization(choice: str, init: str | None) -> str:
    """The stored form of ``TrainConfig.normalization``: ``auto`` of a fresh model becomes
    :func:`auto_normalization`; with ``init`` it stays ``auto`` (the init model's own, kept)."""
    return auto_normalization() if choice == "auto" and init is None else choice


def default_normalization(image_dtype: np.dtype, choice: str = "auto") -> Normalization:
    """The normalisation a fresh model trains with (statistics are fitted per volume by the sampler).

    ``zscore`` / ``percentile``: each volume's mean/std or 1st/99th percentiles over its scanned
    region (``use_mask``); ``scale``: fixed
    ``(x - 127.5) / 127.5`` on the uint8 range, other dtypes converted onto it as at inference (see
    :mod:`..inference.intensity`); ``legacy`` (runs stored before the choice existed): ``scale`` for
    uint8, z-score over the non-zero box otherwise.
    """
    if choice == "auto":
        choice = auto_normalization()
    if choice in FITTED_KINDS:
        return Normalization(kind=choice, mean=0.0, std=1.0, input_range=None, use_mask=True)
    if choice == "scale" or (choice == LEGACY_NORMALIZATION and np.dtype(image_dtype) == np.uint8):
        return Normalization()
    if choice == LEGACY_NORMALIZATION:
        return Normalization(kind="zscore", mean=0.0, std=1.0, input_range=None)
    raise TrainConfigError(f"normalization: unknown choice {choice!r}")


def _kept_normalization(loaded: Normalization, choice: str, init: str) -> Normalization:
    """A fine-tuned model keeps the normalisation its weights were trained with; an explicit choice
    that differs from it is refused (its weights would see other intensities)."""
    if choice in ("auto", LEGACY_NORMALIZATION):
        return loaded
    wanted = default_normalization(np.dtype(np.uint8), choice)
    if loaded.kind != wanted.kind or loaded.use_mask != wanted.use_mask:
        have = loaded.kind + (" over the scanned region" if loaded.use_mask else "")
        raise TrainConfigError(
            f"normalization: {init} was trained with {have} normalisation; fine-tuning keeps it "
            f"(choose auto, not {choice!r})"
        )
    return loaded


def build_training_model(config: TrainConfig, image_dtype: np.dtype) -> TrainingModel:
    """A fresh preset network, or the ``config.init`` checkpoint / nnU-Net folder to fine-tune."""
    if config.init is None:
        try:
            unet_config = preset(config.model_preset, deep_supervision=config.deep_supervision)
        except ValueError as error:
            raise TrainConfigError(f"model_preset: {error}") from error
        torch.manual_seed(int(config.seed))
        network = build_unet(unet_config)
        return TrainingModel(
            network,
            default_normalization(image_dtype, config.normalization),
            unet_config=unet_config,
            source={"init": None, "preset": config.model_preset},
        )
    from ..inference.loading import is_nnunet_folder, load_model

    path = Path(config.init)
    if path.is_dir() and is_nnunet_folder(path):
        return _from_nnunet(path, config)
    loaded = load_model(path)
    stored = getattr(loaded.networks[0], "config", None)
    if not isinstance(stored, UNetConfig):
        from ..inference.checkpoint import read_checkpoint_info

        info = read_checkpoint_info(path)
        if info.nnunet is None:
            raise CheckpointError(path, "cannot fine-tune this network (unknown architecture)")
        network = loaded.networks[0]
        network.train()
        model = TrainingModel(
            network,
            _kept_normalization(loaded.normalization, config.normalization, str(path)),
            nnunet=dict(info.nnunet),
            default_patch_size=loaded.patch_size,
            source={"init": str(path), "kind": "nnunet-fine-tuned"},
        )
        model.set_deep_supervision(config.deep_supervision)
        return model
    unet_config = replace(stored, deep_supervision=config.deep_supervision)
    network = build_unet(unet_config)
    network.load_state_dict(loaded.networks[0].state_dict(), strict=True)
    return TrainingModel(
        network,
        _kept_normalization(loaded.normalization, config.normalization, str(path)),
        unet_config=unet_config,
        default_patch_size=loaded.patch_size,
        source={"init": str(path), "kind": "built-in"},
    )


def _from_nnunet(folder: Path, config: TrainConfig) -> TrainingModel:
    from ..inference.nnunet import find_folds, load_nnunet_model

    folds = find_folds(folder)
    if config.fold is not None:
        chosen: int | str = config.fold
    elif folds:
        chosen = folds[0]
    else:
        raise CheckpointError(folder, "no fold_*/checkpoint_final.pth found in this nnU-Net folder")
    loaded = load_nnunet_model(folder, folds=[chosen])
    network = loaded.networks[0]
    if loaded.metadata.get("transpose_forward", [0, 1, 2]) != [0, 1, 2]:
        raise CheckpointError(folder, "fine-tuning models with a transpose_forward other than [0, 1, 2]")
    import json

    plans = json.loads((folder / "plans.json").read_text())
    configuration = str(loaded.metadata["configuration"])
    arch = plans["configurations"][configuration]["architecture"]
    nnunet = {
        "architecture": arch,
        "num_classes": int(loaded.num_classes),
        "in_channels": 1,
        "configuration": configuration,
        "source_folder": str(folder),
        "fold": str(chosen),
    }
    network.train()
    model = TrainingModel(
        network,
        _kept_normalization(loaded.normalization, config.normalization, str(folder)),
        nnunet=nnunet,
        default_patch_size=loaded.patch_size,
        source={"init": str(folder), "kind": "nnunet", "fold": str(chosen)},
    )
    model.set_deep_supervision(config.deep_supervision)
    return model


def save_model_checkpoint(
    path: Path, model: TrainingModel, patch_size: tuple[int, int, int], metadata: dict[str, Any]
) -> None:
    """Write an inference checkpoint of the current weights (deep supervision off), atomically."""
    from ..inference import checkpoint

    meta = {**metadata, "init": model.source}
    if model.unet_config is not None:
        checkpoint.save_checkpoint(
            path,
            model.network,
            replace(model.unet_config, deep_supervision=False),
            model.normalization,
            patch_size,
            metadata=meta,
        )
        return
    save_nnunet = getattr(checkpoint, "save_nnunet_checkpoint", None)
    if save_nnunet is None:
        raise CheckpointError(path, "this version cannot store fine-tuned nnU-Net networks")
    save_nnunet(path, model.network, model.nnunet, model.normalization, patch_size, metadata=meta)
