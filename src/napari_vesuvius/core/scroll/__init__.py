"""Full-scroll inference: block-wise, on a dask cluster, resumable, into (OME-)Zarr.

``predict_scroll`` (a job generator) = ``prepare_scroll`` (open the input, load the models, create the
output or reopen it to resume) + ``iter_run_scroll`` (run the missing blocks on a dask cluster).
Block geometry and the per-block computation, equal to the in-memory sliding window, live in
``core/inference/blocks.py``; the zarr side in :mod:`.store`; the dask worker side in :mod:`.worker`.
``distributed`` is imported only when a run starts.
"""

from .run import (
    DEFAULT_CHUNK,
    ScrollPlan,
    ScrollResult,
    default_block_size,
    iter_run_scroll,
    predict_scroll,
    prepare_scroll,
)
from .store import is_url

__all__ = [
    "DEFAULT_CHUNK",
    "ScrollPlan",
    "ScrollResult",
    "default_block_size",
    "is_url",
    "iter_run_scroll",
    "predict_scroll",
    "prepare_scroll",
]
