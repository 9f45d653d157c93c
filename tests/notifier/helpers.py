"""Helpers for the notifier tests: a real HTTP receiver on 127.0.0.1 that checks signatures, alert events, polling."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from schemas.alerts import Alert
from schemas.codec import make_event
from schemas.envelope import Envelope
from services.notifier.webhook import DEDUP_HEADER, SIGNATURE_HEADER, verify_signature

SECRET = "s3cret-for-tests"


@dataclass(frozen=True)
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    """Wait this long before answering (longer than the client's timeout: the answer never arrives)."""


@dataclass(frozen=True)
class Post:
    path: str
    key: str
    body: bytes
    headers: dict[str, str]
    signature_ok: bool
    status: int
    at: float


Script = Callable[[str, str, int], Reply]
"""(path, dedup key, how many POSTs with this path and key so far, this one included) -> the reply."""


class Receiver:
    """A threaded HTTP server that records every POST; a bad signature gets 401 whatever the script says."""

    def __init__(self, script: Script | None = None, secret: str = SECRET) -> None:
        self.script: Script = script or (lambda path, key, nth: Reply())
        self.secret = secret
        self.posts: list[Post] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = self.headers.get(DEDUP_HEADER, "")
                ok = verify_signature(receiver.secret, body, self.headers.get(SIGNATURE_HEADER))
                with receiver._lock:
                    nth = 1 + sum(1 for p in receiver.posts if p.path == self.path and p.key == key)
                    reply = receiver.script(self.path, key, nth) if ok else Reply(401)
                    receiver.posts.append(Post(self.path, key, body, dict(self.headers.items()), ok, reply.status,
                                               time.monotonic()))
                if reply.delay_s:
                    time.sleep(reply.delay_s)
                try:
                    self.send_response(reply.status)
                    for name, value in reply.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def posts_to(self, path: str, key: str | None = None) -> list[Post]:
        with self._lock:
            return [p for p in self.posts if p.path == path and (key is None or p.key == key)]

    def accepted(self, path: str) -> list[Post]:
        return [p for p in self.posts_to(path) if p.signature_ok and 200 <= p.status < 300]

    def start(self) -> Receiver:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextmanager
def receiver(script: Script | None = None) -> Iterator[Receiver]:
    r = Receiver(script).start()
    try:
        yield r
    finally:
        r.close()


def alert_event(
    alert_id: str, kind: str = "budget", severity: str = "warning", *, tenant: str = "acme",
    occurred_at: datetime | None = None, observed: dict[str, float] | None = None,
) -> Envelope[Alert]:
    alert = Alert(alert_id=alert_id, kind=kind, severity=severity, title=f"{kind} alert {alert_id}",
                  detail="details", deployment_id="dep-1", observed=observed or {"value": 1.5})
    extra: dict[str, Any] = {} if occurred_at is None else {"occurred_at": occurred_at}
    return make_event(alert, source="test", tenant_id=tenant, **extra)


async def wait_until(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        await asyncio.sleep(0.05)
