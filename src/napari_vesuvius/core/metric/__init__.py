"""The leaderboard metric: SurfaceDice, VOI and TopoScore (Betti matching), combined per volume.

Qt-free. Public API (everything in ``__all__``); the definition it implements, term by term, is in
``docs/challenge.md``:

* :func:`score_volume` — one prediction against one label (arrays, dask arrays or paths; read block by
  block, refused up front when it would not fit in memory) → :class:`ScoreResult`; used by the Score
  widget, the ``score`` CLI, training validation, proofreading and the demo;
* :func:`score_many` / :func:`iter_score_many` → :class:`ScoreSummary` (the mean over volumes);
* :func:`prepare_masks` + :func:`score_masks` — the same on masks already in memory (the sweep scores
  many masks against one prepared label); :data:`SCORE_KEYS`, :data:`SCORE_WEIGHTS` and
  :data:`TOPO_BACKENDS` (``--topo-backend`` choices) describe the result and options;
* the terms on their own: :func:`surface_dice`, :func:`voi` (:class:`VoiResult`), :func:`topo_score`
  (:class:`TopoResult`);
* :data:`MEMORY_LIMIT_ENV` and :func:`parse_bytes` (``memory``) — the memory cap the CLI accepts.

``_betti_*`` modules are the TopoScore kernels (private).
"""

from __future__ import annotations

from .memory import MEMORY_LIMIT_ENV, parse_bytes
from .score import (
    SCORE_KEYS,
    SCORE_WEIGHTS,
    TOPO_BACKENDS,
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
    "MEMORY_LIMIT_ENV",
    "SCORE_KEYS",
    "SCORE_WEIGHTS",
    "TOPO_BACKENDS",
    "ScoreResult",
    "ScoreSummary",
    "TopoResult",
    "VoiResult",
    "iter_score_many",
    "parse_bytes",
    "prepare_masks",
    "score_many",
    "score_masks",
    "score_volume",
    "surface_dice",
    "topo_score",
    "voi",
]
