"""Remote volumes: zarr / OME-Zarr over HTTP(S) (and S3 and other fsspec protocols where installed).

Reads go through a read-only zarr store (:class:`._remote_store.RetryingStore`, around zarr's
``FsspecStore``) that retries transient failures (HTTP 408 / 429 / 500 / 502 / 503 / 504, timeouts,
dropped connections) with bounded exponential backoff and full jitter, honours ``Retry-After``, counts
and reports them (:class:`RemoteStats`, logger ``napari_vesuvius.remote``), and keeps an optional on-disk
chunk cache (:mod:`._remote_cache`; chunks only, metadata documents are always fetched) so browsing the
same region again costs nothing. A missing chunk (404) is not a failure: zarr reads it as the fill value.
401 / 403 and other client errors fail at once; every error names the URL.
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume._remote_cache import ChunkCache

if TYPE_CHECKING:
    from napari_vesuvius.core.volume.io import LazyVolume

log = logging.getLogger("napari_vesuvius.remote")

#: HTTP statuses worth another try (rate limits, overloaded or restarting servers)
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})


def is_url(location: str | Path) -> bool:
    """True for ``scheme://...`` locations (``http``, ``https``, ``s3``, ``gs``, ``memory``...), not
    ``file://`` which is a local path."""
    text = str(location)
    return "://" in text and not text.lower().startswith("file://")


@dataclass(frozen=True)
class RetryPolicy:
    """How transient remote failures are retried: ``attempts`` tries per request, delays growing from
    ``base_delay_s`` by ×2 up to ``max_delay_s`` with full jitter, all retries of one request within
    ``budget_s`` seconds; ``timeout_s`` bounds one try."""

    #: 8 tries with waits capped at 0.5, 1, 2, 4, 8, 16, 30 s: up to about a minute of waiting (half
    #: that on average, full jitter), long enough for a data server's rate-limit window to pass
    attempts: int = 8
    base_delay_s: float = 0.5
    max_delay_s: float = 30.0
    budget_s: float = 120.0
    timeout_s: float = 60.0

    def delay(self, retry: int, retry_after: float | None = None) -> float:
        """Seconds before retry number ``retry`` (1, 2, ...): the server's ``Retry-After`` when it sent
        one, else a uniform draw up to ``base_delay_s · 2**(retry-1)``; never over ``max_delay_s``."""
        if retry_after is not None:
            return min(self.max_delay_s, max(0.0, retry_after))
        return random.uniform(0.0, min(self.max_delay_s, self.base_delay_s * 2 ** (retry - 1)))


@dataclass(frozen=True)
class RemoteOptions:
    """Retry policy and chunk cache of remote reads (``cache_dir`` None: no cache); ``storage_options``
    go to fsspec (e.g. ``{"anon": True}`` for a public S3 bucket)."""

    retry: RetryPolicy = RetryPolicy()
    cache_dir: Path | None = None
    cache_max_bytes: int = 10 * 1024**3
    storage_options: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class RetryEvent:
    """One retry, as passed to :attr:`RemoteStats.listener`."""

    url: str
    key: str
    attempt: int  # the try that failed (1 = first)
    reason: str
    delay_s: float


class RemoteStats:
    """Counters of one remote volume's reads (thread-safe); ``listener`` is called on every retry."""

    FIELDS = (
        "requests",
        "retries",
        "failures",
        "missing_chunks",
        "bytes_fetched",
        "cache_hits",
        "cache_misses",
    )

    def __init__(self, url: str, listener: Callable[[RetryEvent], None] | None = None) -> None:
        self.url = url
        self.listener = listener
        self.requests = self.retries = self.failures = self.missing_chunks = 0
        self.bytes_fetched = self.cache_hits = self.cache_misses = 0
        self.last_retry_reason: str | None = None
        self._lock = threading.Lock()

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def retried(self, event: RetryEvent) -> None:
        with self._lock:
            self.retries += 1
            self.last_retry_reason = event.reason
        log.warning(
            "%s: %s failed on try %d (%s); retrying in %.2f s",
            event.url, event.key, event.attempt, event.reason, event.delay_s,
        )  # fmt: skip
        if self.listener is not None:
            self.listener(event)

    def to_dict(self) -> dict[str, Any]:
        with self._lock:
            counts: dict[str, Any] = {name: getattr(self, name) for name in self.FIELDS}
        return {"url": self.url, **counts, "last_retry_reason": self.last_retry_reason}

    def __getstate__(self) -> dict[str, Any]:  # picklable (dask): no lock, no listener
        return {**self.__dict__, "_lock": None, "listener": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


# --------------------------------------------------------------------------------------------- store
def _fsspec_store(url: str, options: RemoteOptions) -> Any:
    from zarr.storage import FsspecStore

    try:
        return FsspecStore.from_url(url, storage_options=dict(options.storage_options), read_only=True)
    except ImportError as error:
        scheme = url.split("://", 1)[0].lower()
        package = {"s3": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs"}.get(scheme)
        hint = f"; install {package} (pip install {package})" if package else ""
        raise VolumeError(url, f"no filesystem for {scheme}:// URLs ({error}){hint}") from error
    except ValueError as error:  # an unknown protocol
        raise VolumeError(url, f"cannot open this URL ({error})") from error


def open_remote_store(url: str, options: RemoteOptions | None = None) -> Any:
    """The read-only zarr store of ``url`` (retries, cache, counters in its ``stats``)."""
    options = options or RemoteOptions()
    url = url.rstrip("/")
    cache = None
    if options.cache_dir is not None:
        cache = ChunkCache(options.cache_dir, url, options.cache_max_bytes)
    from napari_vesuvius.core.volume._remote_store import RetryingStore

    return RetryingStore(_fsspec_store(url, options), url=url, options=options, cache=cache)


def open_remote_volume(
    url: str, *, options: RemoteOptions | None = None, allow_incomplete: bool = False
) -> LazyVolume:
    """Open a remote zarr / OME-Zarr volume lazily through the retrying, caching store.

    VolumeError naming the URL when the host is unreachable or nothing zarr is there; ``volume.remote``
    holds the :class:`RemoteStats` of its reads.
    """
    import zarr

    from napari_vesuvius.core.volume.io import volume_from_zarr_node

    url = url.rstrip("/")
    store = open_remote_store(url, options)
    try:
        node = zarr.open(store=store, mode="r")
    except VolumeError:
        raise
    except FileNotFoundError as error:
        raise VolumeError(url, "no zarr or OME-Zarr at this URL (no zarr metadata found)") from error
    except Exception as error:  # zarr / fsspec raise many kinds for a missing node or a bad document
        raise VolumeError(
            url, f"no zarr or OME-Zarr at this URL ({type(error).__name__}: {error})"
        ) from error
    volume = volume_from_zarr_node(node, url, allow_incomplete=allow_incomplete)
    volume.remote = store.stats
    return volume


__all__ = [
    "RETRY_STATUSES",
    "RemoteOptions",
    "RemoteStats",
    "RetryEvent",
    "RetryPolicy",
    "is_url",
    "open_remote_store",
    "open_remote_volume",
]
