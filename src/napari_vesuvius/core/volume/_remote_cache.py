"""The on-disk chunk cache of remote volumes (:class:`ChunkCache`), bounded by size, least recently used out.

Layout: ``<cache_dir>/<first 16 hex digits of sha256(root URL)>/<zarr key>``, plus ``url.txt`` naming the
root URL. A byte-range read is stored under ``<key>#<start>-<end>`` (``#o<offset>``, ``#s<suffix>``), and
is answered from the whole object when that is cached. Files are written atomically (temporary sibling,
then ``os.replace``), so a killed reader never leaves a half-written chunk that a later read would trust.
A cache hit touches the file's modification time: eviction removes the oldest-touched files of the whole
cache folder until it is back under ``max_bytes`` (90 % of it, so evictions are not per write).

Remote objects are assumed not to change while cached (published volumes); metadata documents are
never cached (see :data:`METADATA_NAMES`), so a changed or growing volume is still described rightly.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
import uuid
from pathlib import Path

#: zarr metadata documents: always fetched (small; may change, e.g. the progress record of a run)
METADATA_NAMES = frozenset({"zarr.json", ".zarray", ".zattrs", ".zgroup", ".zmetadata"})
_TEMP_MARK = ".part-"


def is_metadata_key(key: str) -> bool:
    return key.rsplit("/", 1)[-1] in METADATA_NAMES


class ChunkCache:
    """Chunks of one remote root URL under ``cache_dir``; the byte bound covers the whole ``cache_dir``."""

    def __init__(self, cache_dir: str | Path, url: str, max_bytes: int) -> None:
        self.root_dir = Path(cache_dir).expanduser()
        digest = hashlib.sha256(url.rstrip("/").encode("utf-8")).hexdigest()[:16]
        self.folder = self.root_dir / digest
        self.url = url
        self.max_bytes = int(max_bytes)
        self._total: int | None = None  # bytes in root_dir, counted on the first write
        self._lock = threading.Lock()

    def path(self, key: str, suffix: str = "") -> Path | None:
        """Where ``key`` (+ a byte-range suffix) is cached; None for a key that could leave the folder."""
        parts = key.split("/")
        if not key or any(part in ("", ".", "..") for part in parts) or "\\" in key:
            return None
        return self.folder.joinpath(*parts[:-1], parts[-1] + suffix)

    def has(self, key: str) -> bool:
        path = self.path(key)
        return path is not None and path.is_file()

    def get(self, key: str, suffix: str = "") -> bytes | None:
        """The cached bytes (and mark them recently used), else None."""
        path = self.path(key, suffix)
        if path is None:
            return None
        try:
            data = path.read_bytes()
        except OSError:  # absent, or evicted by another process meanwhile
            return None
        with contextlib.suppress(OSError):
            os.utime(path)
        return data

    def put(self, key: str, data: bytes, suffix: str = "") -> None:
        """Store ``data`` atomically, then evict the least recently used files when over the bound."""
        path = self.path(key, suffix)
        if path is None or len(data) > self.max_bytes:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._write_url_note()
            temp = path.with_name(f"{path.name}{_TEMP_MARK}{uuid.uuid4().hex[:8]}-{os.getpid()}")
            temp.write_bytes(data)
            os.replace(temp, path)
        except OSError:  # a full or read-only cache disk must not fail the read itself
            with contextlib.suppress(OSError, UnboundLocalError):
                temp.unlink()
            return
        with self._lock:
            self._total = self._scan() if self._total is None else self._total + len(data)
            if self._total > self.max_bytes:
                self._evict(int(self.max_bytes * 0.9))

    def _write_url_note(self) -> None:
        note = self.folder / "url.txt"
        if not note.exists():
            note.write_text(self.url + "\n", encoding="utf-8")

    def _files(self) -> list[tuple[float, int, Path]]:
        found = []
        for folder, _dirs, names in os.walk(self.root_dir):
            for name in names:
                if name == "url.txt" or _TEMP_MARK in name:
                    continue
                path = Path(folder) / name
                with contextlib.suppress(OSError):
                    stat = path.stat()
                    found.append((stat.st_mtime, stat.st_size, path))
        return found

    def _scan(self) -> int:
        return sum(size for _, size, _ in self._files())

    def _evict(self, target: int) -> None:
        files = sorted(self._files(), key=lambda item: item[0])
        total = sum(size for _, size, _ in files)
        for _, size, path in files:
            if total <= target:
                break
            with contextlib.suppress(OSError):
                path.unlink()
                total -= size
        self._total = total

    def __getstate__(self) -> dict[str, object]:  # picklable (dask workers): a fresh lock and count
        return {**self.__dict__, "_lock": None, "_total": None}

    def __setstate__(self, state: dict[str, object]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def size(self) -> int:
        """Bytes now cached under ``cache_dir`` (a scan)."""
        return self._scan()
