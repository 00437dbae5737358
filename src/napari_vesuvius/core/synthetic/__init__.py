"""Synthetic scroll fragments and challenge-style datasets (sample data, tests, demo, benchmarks).

Pure numpy/scipy and deterministic for a given seed. See :mod:`.fragment` for what the labels mean.

Public API (everything in ``__all__``): :func:`make_fragment` (options in :class:`FragmentOptions`) →
:class:`SyntheticFragment`, used by napari's sample data, tests and benchmarks;
:func:`write_challenge_dataset` / :func:`iter_write_challenge_dataset` write a challenge dataset folder
(layout in ``docs/challenge.md``; :data:`TEST_LABELS_DIR` holds the test labels a real dataset lacks,
used by the demo to score), :func:`write_training_folder` a plain images/labels folder and
:func:`write_volume_tif` one volume. :func:`randomised_fragment` (ranges in :class:`DomainRanges`,
sub-range axes and tags in :data:`SUBRANGE_AXES`; see :mod:`.domain`) draws a fragment whose look is
randomised (packing, contrast, noise and blur, global brightness, scan region, tears) for training and
benchmarking models that must survive a new scroll; the sample data stays :func:`make_fragment`.
``_fields``, ``_render``, ``_sheets``, ``_options`` are private.
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
from .domain import SUBRANGE_AXES, DomainRanges, randomised_fragment
from .fragment import SyntheticFragment, make_fragment

__all__ = [
    "DEFAULT_SCROLL_IDS",
    "SUBRANGE_AXES",
    "TEST_LABELS_DIR",
    "ChallengeLayout",
    "DomainRanges",
    "FragmentOptions",
    "SyntheticFragment",
    "iter_write_challenge_dataset",
    "make_fragment",
    "randomised_fragment",
    "write_challenge_dataset",
    "write_training_folder",
    "write_volume_tif",
]
