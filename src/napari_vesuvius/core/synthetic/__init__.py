"""Synthetic scroll fragments and challenge-style datasets (sample data, tests, demo, benchmarks).

Pure numpy/scipy and deterministic for a given seed. See :mod:`.fragment` for what the labels mean.
"""

from __future__ import annotations

from ._options import FragmentOptions
from .dataset import (
    DEFAULT_SCROLL_IDS,
    TEST_LABELS_DIR,
    ChallengeLayout,
    iter_write_challenge_dataset,
    write_challenge_dataset,
    write_training_folder,
    write_volume_tif,
)
from .fragment import SyntheticFragment, make_fragment

__all__ = [
    "DEFAULT_SCROLL_IDS",
    "TEST_LABELS_DIR",
    "ChallengeLayout",
    "FragmentOptions",
    "SyntheticFragment",
    "iter_write_challenge_dataset",
    "make_fragment",
    "write_challenge_dataset",
    "write_training_folder",
    "write_volume_tif",
]
