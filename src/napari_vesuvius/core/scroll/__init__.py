"""Full-scroll inference: block-wise, on a dask cluster, resumable, into (OME-)Zarr.

``predict_scroll`` (a job generator) = ``prepare_scroll`` (open the input, load the models, create the
output or reopen it to resume) + ``iter_run_scroll`` (run the missing blocks on a dask cluster).
Block geometry and the per-block computation, equal to the in-memory sliding window, live in
``core/inference/blocks.py``; the input in :mod:`.source` (local or URL through the retrying store), the
output in :mod:`.store`, its progress record in :mod:`.record`; the dask worker side in :mod:`.worker`.
``distributed`` is imported only when a run starts.

Public API (everything in ``__all__``): the job and its two halves above, used by the ``predict`` CLI
(``--distributed`` or a URL, see :func:`is_url`) and the Inference widget's scroll mode; and from
:mod:`.record` and :mod:`.source` what readers of a scroll output need: :func:`output_progress` (done /
total blocks of an output, for ``info`` and the napari reader), :func:`require_complete` with
:data:`RESUME_HINT` (refuse to read an unfinished output as if it were whole), :func:`open_array` and
:func:`join` (open a level of a local or fsspec store).
"""

from .record import RESUME_HINT, output_progress, require_complete
from .run import (
    DEFAULT_CHUNK,
    ScrollPlan,
    ScrollResult,
    default_block_size,
    iter_run_scroll,
    predict_scroll,
    prepare_scroll,
)
from .source import is_url, join, open_array

__all__ = [
    "DEFAULT_CHUNK",
    "RESUME_HINT",
    "ScrollPlan",
    "ScrollResult",
    "default_block_size",
    "is_url",
    "iter_run_scroll",
    "join",
    "open_array",
    "output_progress",
    "predict_scroll",
    "prepare_scroll",
    "require_complete",
]
