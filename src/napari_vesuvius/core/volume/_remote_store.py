"""The retrying, caching read-only zarr store of remote volumes (see :mod:`.remote`, which opens it).

:class:`RetryingStore` wraps zarr's ``FsspecStore``: every ``get`` / ``exists`` goes through
:func:`with_retries` (transient failures tried again with backoff, permanent ones a VolumeError naming the
URL and key at once) and, for chunks, through the on-disk :class:`~._remote_cache.ChunkCache`. Listing
(``list`` / ``list_dir``) is delegated untried: zarr lists only to find a plain group's arrays.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import AsyncGenerator, Callable, Iterable
from typing import Any

from zarr.abc.store import ByteRequest, OffsetByteRequest, RangeByteRequest, SuffixByteRequest
from zarr.core.buffer import Buffer, BufferPrototype
from zarr.storage import FsspecStore, WrapperStore

from napari_vesuvius.core.errors import VolumeError
from napari_vesuvius.core.volume._remote_cache import ChunkCache, is_metadata_key
from napari_vesuvius.core.volume.remote import (
    RETRY_STATUSES,
    RemoteOptions,
    RemoteStats,
    RetryEvent,
    RetryPolicy,
)

_MISSING = (FileNotFoundError, IsADirectoryError, NotADirectoryError)
#: botocore error names (parts) worth another try: lost connections and timeouts
_BOTO_TRANSIENT = ("Connection", "Timeout", "HTTPClient", "Throttl")


class _Transient(Exception):
    """A failure worth another try: ``reason`` for reports, ``retry_after`` from the server."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after(headers: Any) -> float | None:
    """Seconds of a ``Retry-After`` header (delta-seconds or an HTTP date), else None."""
    value = headers.get("Retry-After") if headers is not None else None
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def classify(url: str, key: str, error: BaseException) -> _Transient:
    """The transient reason of ``error``, or raise the VolumeError that reports a permanent one."""
    status = getattr(error, "status", None)
    if isinstance(status, int) and status >= 400:  # aiohttp.ClientResponseError (HTTP filesystems)
        if status in RETRY_STATUSES:
            return _Transient(f"HTTP {status}", _retry_after(getattr(error, "headers", None)))
        if status in (401, 403):
            raise VolumeError(
                url, f"access denied reading {key!r} (HTTP {status}); check the URL or the credentials"
            ) from error
        raise VolumeError(url, f"cannot read {key!r} (HTTP {status})") from error
    if isinstance(error, PermissionError):
        raise VolumeError(url, f"access denied reading {key!r} ({error})") from error
    if isinstance(error, (TimeoutError, asyncio.TimeoutError)):
        return _Transient("timeout")
    if isinstance(error, OSError):  # connection resets and refusals, s3fs' translated errors
        return _Transient(_describe(error))
    module, name = type(error).__module__ or "", type(error).__name__
    if module.startswith("aiohttp"):  # payload and disconnect errors
        return _Transient(_describe(error))
    if module.startswith(("botocore", "aiobotocore")) and any(w in name for w in _BOTO_TRANSIENT):
        return _Transient(_describe(error))  # (s3fs retries throttling itself)
    if name == "NoCredentialsError":
        raise VolumeError(
            url, "no credentials for this bucket; configure AWS credentials, or for a public bucket open it "
            "with RemoteOptions(storage_options={'anon': True})",
        ) from error  # fmt: skip
    raise VolumeError(url, f"cannot read {key!r} ({_describe(error)})") from error


async def with_retries(
    call: Callable[[], Any], *, url: str, key: str, policy: RetryPolicy, stats: RemoteStats
) -> Any:
    """``await call()`` with the retries of ``policy``; VolumeError naming ``url`` and ``key`` when it
    fails for good. A missing object (FileNotFoundError) passes through, not tried again — unless it
    hides a transient failure (fsspec's HTTP ``info`` reports any failure as not found)."""
    started = time.monotonic()
    attempt = 0
    while True:
        attempt += 1
        stats.add(requests=1)
        try:
            return await asyncio.wait_for(call(), timeout=policy.timeout_s)
        except Exception as error:  # classified below; permanent ones re-raised
            failure = error
            if isinstance(error, _MISSING):
                cause = error.__cause__
                if cause is None or isinstance(cause, _MISSING) or getattr(cause, "status", 0) in (404, 410):
                    raise
                failure = cause
            try:
                transient = classify(url, key, failure)
            except VolumeError:
                stats.add(failures=1)
                raise
            elapsed = time.monotonic() - started
            delay = policy.delay(attempt, transient.retry_after)
            if attempt >= policy.attempts or elapsed + delay > policy.budget_s:
                stats.add(failures=1)
                raise VolumeError(
                    url,
                    f"gave up reading {key!r} after {attempt} tries in {elapsed:.1f} s (last: "
                    f"{transient.reason}); the server keeps failing: try again later or raise --retries",
                ) from error
            stats.retried(RetryEvent(url, key, attempt, transient.reason, delay))
            await asyncio.sleep(delay)


def range_suffix(byte_range: ByteRequest | None) -> str:
    """The cache-name suffix of a byte range ("" for a whole object)."""
    if byte_range is None:
        return ""
    if isinstance(byte_range, RangeByteRequest):
        return f"#{byte_range.start}-{byte_range.end}"
    if isinstance(byte_range, OffsetByteRequest):
        return f"#o{byte_range.offset}"
    if isinstance(byte_range, SuffixByteRequest):
        return f"#s{byte_range.suffix}"
    raise ValueError(f"unexpected byte range {byte_range!r}")


def slice_range(data: bytes, byte_range: ByteRequest | None) -> bytes:
    """The part of a whole object that ``byte_range`` asks for."""
    if byte_range is None:
        return data
    if isinstance(byte_range, RangeByteRequest):
        return data[byte_range.start : byte_range.end]
    if isinstance(byte_range, OffsetByteRequest):
        return data[byte_range.offset :]
    if isinstance(byte_range, SuffixByteRequest):
        return data[-byte_range.suffix :] if byte_range.suffix else b""
    raise ValueError(f"unexpected byte range {byte_range!r}")


class RetryingStore(WrapperStore[FsspecStore]):
    """Read-only zarr store of a URL: retries, the chunk cache and :class:`~.remote.RemoteStats`."""

    def __init__(
        self,
        store: FsspecStore,
        *,
        url: str,
        options: RemoteOptions,
        cache: ChunkCache | None = None,
        stats: RemoteStats | None = None,
    ) -> None:
        super().__init__(store)
        self.url = url
        self.options = options
        self.cache = cache
        self.stats = stats if stats is not None else RemoteStats(url)

    def _with_store(self, store: FsspecStore) -> RetryingStore:
        return type(self)(store, url=self.url, options=self.options, cache=self.cache, stats=self.stats)

    def __repr__(self) -> str:
        return f"RetryingStore({self.url!r})"

    def __str__(self) -> str:
        return self.url

    async def _retried(self, key: str, call: Callable[[], Any]) -> Any:
        return await with_retries(call, url=self.url, key=key, policy=self.options.retry, stats=self.stats)

    def _cached(self, key: str, byte_range: ByteRequest | None) -> bytes | None:
        if self.cache is None or is_metadata_key(key):
            return None
        whole = self.cache.get(key)
        if whole is not None:
            return slice_range(whole, byte_range)
        return None if byte_range is None else self.cache.get(key, range_suffix(byte_range))

    async def get(
        self, key: str, prototype: BufferPrototype, byte_range: ByteRequest | None = None
    ) -> Buffer | None:
        cached = self._cached(key, byte_range)
        if cached is not None:
            self.stats.add(cache_hits=1)
            return prototype.buffer.from_bytes(cached)
        caching = self.cache is not None and not is_metadata_key(key)
        if caching:
            self.stats.add(cache_misses=1)
        value = await self._retried(key, lambda: self._store.get(key, prototype, byte_range))
        if value is None:  # not there: a chunk reads as the fill value, a metadata document as absent
            if not is_metadata_key(key):
                self.stats.add(missing_chunks=1)
            return None
        data = value.to_bytes()
        self.stats.add(bytes_fetched=len(data))
        if caching and self.cache is not None:
            self.cache.put(key, data, range_suffix(byte_range))
        return value

    async def get_partial_values(
        self, prototype: BufferPrototype, key_ranges: Iterable[tuple[str, ByteRequest | None]]
    ) -> list[Buffer | None]:
        return list(await asyncio.gather(*(self.get(k, prototype, r) for k, r in key_ranges)))

    async def _get_many(
        self, requests: Iterable[tuple[str, BufferPrototype, ByteRequest | None]]
    ) -> AsyncGenerator[tuple[str, Buffer | None], None]:
        for key, prototype, byte_range in requests:
            yield key, await self.get(key, prototype, byte_range)

    async def exists(self, key: str) -> bool:
        if self.cache is not None and self.cache.has(key):
            return True
        path = f"{self._store.path.rstrip('/')}/{key}"
        try:
            await self._retried(key, lambda: self._store.fs._info(path))
        except _MISSING:
            return False
        return True
