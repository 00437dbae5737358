"""Remote volumes: zarr / OME-Zarr over HTTP(S) (and S3 and other fsspec protocols where installed).

Reads go through a read-only zarr store that retries transient failures (HTTP 429 / 5xx, timeouts, dropped
connections) with bounded exponential backoff and jitter, counts and reports them, and keeps an optional
on-disk chunk cache so browsing the same region again costs nothing. A missing chunk (404) is not a
failure: zarr reads it as the fill value. Owned by the remote-volume work of issue 17.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from napari_vesuvius.core.volume.io import LazyVolume


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` locations (``http``, ``https``, ``s3``, ``gs``, ``memory``...), not
    ``file://`` which is a local path."""
    text = str(location)
    return "://" in text and not text.lower().startswith("file://")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient remote failures are retried: ``attempts`` tries per request, delays growing from
    ``base_delay_s`` by ×2 up to ``max_delay_s`` with full jitter, all retries of one request within
    ``budget_s`` seconds."""

    attempts: int = 6
    base_delay_s: float = 0.5
    max_delay_s: float = 20.0
    budget_s: float = 120.0
    timeout_s: float = 60.0


@dataclass(frozen=True)
class RemoteOptions:
    """Retry policy and chunk cache of remote reads (``cache_dir`` None: no cache)."""

    retry: RetryPolicy = RetryPolicy()
    cache_dir: Path | None = None
    cache_max_bytes: int = 10 * 1024**3


def open_remote_volume(
    url: str, *, options: RemoteOptions | None = None, allow_incomplete: bool = False
) -> LazyVolume:
    """Open a remote zarr / OME-Zarr volume lazily through the retrying, caching store."""
    raise NotImplementedError


def open_remote_store(url: str, options: RemoteOptions | None = None) -> Any:
    """The read-only zarr store of ``url`` (retries, cache, counters in its ``stats``)."""
    raise NotImplementedError
