"""The leaderboard metric: SurfaceDice, VOI and TopoScore (Betti matching), combined per volume.

``score_volume(pred, label)`` is the entry point; the terms live in ``surface_dice``, ``voi`` and ``topo``.
"""

from __future__ import annotations

from .score import (
    SCORE_KEYS,
    SCORE_WEIGHTS,
    ScoreResult,
    ScoreSummary,
    iter_score_many,
    prepare_masks,
    score_many,
    score_masks,
    score_volume,
)
from .surface_dice import surface_dice
from .topo import TopoResult, topo_score
from .voi import VoiResult, voi

__all__ = [
    "SCORE_KEYS",
    "SCORE_WEIGHTS",
    "ScoreResult",
    "ScoreSummary",
    "TopoResult",
    "VoiResult",
    "iter_score_many",
    "prepare_masks",
    "score_many",
    "score_masks",
    "score_volume",
    "surface_dice",
    "topo_score",
    "voi",
]
