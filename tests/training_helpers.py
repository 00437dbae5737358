"""Shared pieces of the training tests: a small training folder of synthetic fragments."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from napari_vesuvius.core.synthetic import make_fragment
from napari_vesuvius.core.volume_io import write_volume


def write_training_folder(root: Path, shape: tuple[int, int, int], seeds: Iterable[int] = (0, 1)) -> Path:
    """``root/train_images`` + ``root/train_labels``: one synthetic fragment per seed (``<seed>.tif``)."""
    (root / "train_images").mkdir(parents=True)
    (root / "train_labels").mkdir()
    for seed in seeds:
        fragment = make_fragment(shape, seed=seed)
        write_volume(root / "train_images" / f"{seed}.tif", fragment.image)
        write_volume(root / "train_labels" / f"{seed}.tif", fragment.labels)
    return root
