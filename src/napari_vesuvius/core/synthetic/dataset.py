"""Write a synthetic dataset folder in the exact layout of the Kaggle surface-detection challenge.

::

    folder/
      train.csv, test.csv            columns ``id,scroll_id``; ids are integers like the challenge's
      train_images/<id>.tif          uint8 CT, LZW, one page per z-slice
      train_labels/<id>.tif          uint8 labels 0/1/2, LZW
      test_images/<id>.tif
      test_labels_hidden/<id>.tif    (optional) the test ground truth, for scoring tests; not part of
                                     the real challenge layout, so readers of that layout ignore it

Every volume comes from its own seed derived from ``seed`` (``SeedSequence.spawn``), so a dataset
is reproducible and volume ``i`` does not depend on how many others are written.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..atomic import atomic_write_bytes
from ..progress import Job, Progress, run_job
from .fragment import make_fragment

#: The six scrolls of the challenge's training set.
DEFAULT_SCROLL_IDS: tuple[int, ...] = (34117, 35360, 26010, 26002, 44430, 53997)
TEST_LABELS_DIR = "test_labels_hidden"


@dataclass(frozen=True)
class ChallengeLayout:
    """Where everything of a written dataset lives, plus the ids and their scrolls."""

    root: Path
    train_ids: list[int]
    test_ids: list[int]
    scroll_ids: dict[int, int] = field(default_factory=dict)
    seeds: dict[int, int] = field(default_factory=dict)
    has_test_labels: bool = False

    def train_image(self, volume_id: int) -> Path:
        return self.root / "train_images" / f"{volume_id}.tif"

    def train_label(self, volume_id: int) -> Path:
        return self.root / "train_labels" / f"{volume_id}.tif"

    def test_image(self, volume_id: int) -> Path:
        return self.root / "test_images" / f"{volume_id}.tif"

    def test_label(self, volume_id: int) -> Path:
        """The hidden test ground truth (only written with ``write_test_labels=True``)."""
        return self.root / TEST_LABELS_DIR / f"{volume_id}.tif"

    @property
    def train_csv(self) -> Path:
        return self.root / "train.csv"

    @property
    def test_csv(self) -> Path:
        return self.root / "test.csv"


def write_volume_tif(path: Path, volume: np.ndarray) -> None:
    """Write a 3D uint8 volume as an LZW TIFF, one page per z-slice, atomically."""
    import tifffile

    buffer = io.BytesIO()
    tifffile.imwrite(buffer, volume, compression="lzw", photometric="minisblack", metadata=None)
    atomic_write_bytes(path, buffer.getvalue())


def _write_csv(path: Path, ids: Sequence[int], scroll_ids: dict[int, int]) -> None:
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "scroll_id"])
    writer.writerows([volume_id, scroll_ids[volume_id]] for volume_id in ids)
    atomic_write_bytes(path, text.getvalue().encode())


def iter_write_challenge_dataset(
    folder: str | os.PathLike[str],
    n_train: int = 4,
    n_test: int = 2,
    shape: tuple[int, int, int] = (64, 64, 64),
    seed: int = 0,
    scroll_ids: Sequence[int] = DEFAULT_SCROLL_IDS,
    write_test_labels: bool = True,
    **options: object,
) -> Job[ChallengeLayout]:
    """Job (generator yielding :class:`Progress`) writing a challenge-layout dataset; returns its layout.

    Volumes are written atomically one by one; the CSVs come last, so a cancelled job leaves no CSV
    pointing at missing volumes. ``options`` go to :func:`make_fragment`.
    """
    if n_train < 0 or n_test < 0 or n_train + n_test == 0:
        raise ValueError(f"need n_train >= 0, n_test >= 0 and at least one volume, got {n_train}, {n_test}")
    if not scroll_ids:
        raise ValueError("scroll_ids must name at least one scroll")
    root = Path(folder)
    total = n_train + n_test
    sequence = np.random.SeedSequence(int(seed))
    rng = np.random.default_rng(sequence.spawn(1)[0])
    ids = _volume_ids(rng, total)
    scrolls = {vid: int(scroll_ids[int(rng.integers(len(scroll_ids)))]) for vid in ids}
    seeds = {
        vid: int(child.generate_state(1)[0]) for vid, child in zip(ids, sequence.spawn(total), strict=True)
    }
    train_ids, test_ids = ids[:n_train], ids[n_train:]
    dirs = ["train_images", "train_labels", "test_images"] + ([TEST_LABELS_DIR] if write_test_labels else [])
    for name in dirs:
        (root / name).mkdir(parents=True, exist_ok=True)
    layout = ChallengeLayout(root, train_ids, test_ids, scrolls, seeds, write_test_labels)
    for done, vid in enumerate(ids):
        yield Progress(done, total, f"volume {vid}")
        fragment = make_fragment(shape, seed=seeds[vid], **options)
        if vid in train_ids:
            write_volume_tif(layout.train_image(vid), fragment.image)
            write_volume_tif(layout.train_label(vid), fragment.labels)
        else:
            write_volume_tif(layout.test_image(vid), fragment.image)
            if write_test_labels:
                write_volume_tif(layout.test_label(vid), fragment.labels)
    _write_csv(layout.train_csv, train_ids, scrolls)
    _write_csv(layout.test_csv, test_ids, scrolls)
    yield Progress(total, total, "done")
    return layout


def _volume_ids(rng: np.random.Generator, count: int) -> list[int]:
    """Distinct 9–10 digit integer ids like the challenge's, in random order."""
    chosen: dict[int, None] = {}
    while len(chosen) < count:
        chosen.setdefault(int(rng.integers(10**8, 2**31 - 1)), None)
    return list(chosen)


def write_challenge_dataset(
    folder: str | os.PathLike[str],
    n_train: int = 4,
    n_test: int = 2,
    shape: tuple[int, int, int] = (64, 64, 64),
    seed: int = 0,
    scroll_ids: Sequence[int] = DEFAULT_SCROLL_IDS,
    write_test_labels: bool = True,
    **options: object,
) -> ChallengeLayout:
    """Write a challenge-layout dataset synchronously (see :func:`iter_write_challenge_dataset`)."""
    return run_job(
        iter_write_challenge_dataset(
            folder, n_train, n_test, shape, seed, scroll_ids, write_test_labels, **options
        )
    )


def write_training_folder(
    root: str | os.PathLike[str], shape: tuple[int, int, int], seeds: Sequence[int] = (0, 1)
) -> Path:
    """``root/train_images`` + ``root/train_labels`` with one fragment per seed, named ``<seed>.tif``.

    The smallest folder ``train --data`` accepts, with the fragments picked by seed (tests, benchmarks);
    :func:`write_challenge_dataset` writes the full challenge layout instead. Returns ``root``.
    """
    root = Path(root)
    (root / "train_images").mkdir(parents=True)
    (root / "train_labels").mkdir()
    for seed in seeds:
        fragment = make_fragment(shape, seed=int(seed))
        write_volume_tif(root / "train_images" / f"{seed}.tif", fragment.image)
        write_volume_tif(root / "train_labels" / f"{seed}.tif", fragment.labels)
    return root
