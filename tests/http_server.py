"""A loopback HTTP server for remote-volume tests: serves a folder, injects faults, counts requests.

Faults are queued per path (``"/vol.zarr/0/0.0.0"``) or globally (``None``: the next requests to any
path) and consumed one per request: an HTTP status (429 / 503 ..., optionally with ``Retry-After``), a
slow response (sleep, then serve) or a dropped connection (closed without an answer). ``always`` makes
every request (to a path, or to all) fail with a status until ``clear()``.
"""

from __future__ import annotations

import collections
import functools
import threading
import time
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Fault:
    """One injected misbehaviour: ``status`` (with ``retry_after`` seconds), ``slow_s`` or ``drop``."""

    status: int | None = None
    retry_after: str | None = None
    slow_s: float = 0.0
    drop: bool = False


def status(code: int, retry_after: float | str | None = None) -> Fault:
    return Fault(status=code, retry_after=None if retry_after is None else str(retry_after))


def slow(seconds: float) -> Fault:
    return Fault(slow_s=seconds)


DROP = Fault(drop=True)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:  # a client gone after a timeout
        pass


class FaultServer:
    """``with FaultServer(folder) as server: server.url`` — see the module docstring."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.requests: collections.Counter[str] = collections.Counter()
        self.faults_served: list[tuple[str, Fault]] = []
        self._queues: dict[str | None, collections.deque[Fault]] = collections.defaultdict(collections.deque)
        self._always: dict[str | None, Fault] = {}
        self._lock = threading.Lock()
        handler = functools.partial(_Handler, directory=str(self.root), server_state=self)
        self._httpd = _Server(("127.0.0.1", 0), handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def inject(self, path: str | None, *faults: Fault) -> None:
        """Queue ``faults`` for the next requests of ``path`` (``None``: of any path)."""
        with self._lock:
            self._queues[path].extend(faults)

    def always(self, code: int, path: str | None = None, retry_after: float | None = None) -> None:
        """Answer every request of ``path`` (``None``: every request) with ``code``."""
        with self._lock:
            self._always[path] = status(code, retry_after)

    def clear(self) -> None:
        with self._lock:
            self._queues.clear()
            self._always.clear()

    def count(self, prefix: str = "") -> int:
        """Requests so far whose path starts with ``prefix``."""
        with self._lock:
            return sum(n for path, n in self.requests.items() if path.startswith(prefix))

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()
            self.faults_served.clear()

    def take(self, path: str) -> Fault | None:
        """Count a request of ``path`` and the fault it gets (None: served normally)."""
        with self._lock:
            self.requests[path] += 1
            for where in (path, None):
                if self._queues.get(where):
                    fault = self._queues[where].popleft()
                    break
            else:
                fault = self._always.get(path) or self._always.get(None)
            if fault is not None:
                self.faults_served.append((path, fault))
            return fault

    def close(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> FaultServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _Handler(SimpleHTTPRequestHandler):
    def __init__(self, *args: Any, server_state: FaultServer, **kwargs: Any) -> None:
        self.state = server_state
        super().__init__(*args, **kwargs)

    def log_message(self, format: str, *args: Any) -> None:  # quiet tests
        pass

    def _fault(self) -> bool:
        """Apply the injected fault of this request; True when it answered (or dropped) it."""
        fault = self.state.take(self.path.split("?", 1)[0])
        if fault is None:
            return False
        if fault.slow_s:
            time.sleep(fault.slow_s)
            return False
        if fault.drop:
            self.close_connection = True
            return True
        self.send_response(fault.status or 500)
        if fault.retry_after is not None:
            self.send_header("Retry-After", fault.retry_after)
        self.send_header("Content-Length", "0")
        self.end_headers()
        return True

    def do_GET(self) -> None:
        if not self._fault():
            super().do_GET()

    def do_HEAD(self) -> None:
        if not self._fault():
            super().do_HEAD()
