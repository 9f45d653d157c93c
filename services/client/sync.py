"""A blocking wrapper around :class:`services.client.client.Client` for producers without an event loop.

The async client runs in a private event loop on a daemon thread; each call waits for its result there.

```python
with SyncClient(settings, tenant="acme") as client:
    print(client.complete("chat", messages=[Message(role="user", content="Hi")]).text)
    for piece in client.stream("chat", messages=[...]):
        print(piece.text, end="")
```
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

from schemas.completions import Completion, CompletionChunk
from services.client.client import Client, ClientConfig
from services.core.settings import Settings

T = TypeVar("T")
_END = object()


class SyncClient:
    """The same calls as :class:`Client`, blocking. Use as a context manager, or call ``close()``."""

    def __init__(
        self, settings: Settings, *, tenant: str, application: str = "default", config: ClientConfig | None = None,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="llmops-client", daemon=True)
        self._thread.start()
        self.client = Client(settings, tenant=tenant, application=application, config=config)
        self._call(self.client.start())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._thread.is_alive():
            self._call(self.client.close())
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def complete(self, model: str, **kwargs: Any) -> Completion:
        """As :meth:`Client.complete`, blocking."""
        return self._call(self.client.complete(model, **kwargs))

    def stream(self, model: str, **kwargs: Any) -> Iterator[CompletionChunk]:
        """As :meth:`Client.stream`: yields chunks as they arrive; raises what the async stream raises."""
        pieces: queue.Queue[object] = queue.Queue()

        async def pump() -> None:
            try:
                async with self.client.stream(model, **kwargs) as stream:
                    async for piece in stream:
                        pieces.put(piece)
            except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread
                pieces.put(exc)
            finally:
                pieces.put(_END)

        future = asyncio.run_coroutine_threadsafe(pump(), self._loop)
        try:
            while (item := pieces.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                assert isinstance(item, CompletionChunk)
                yield item
        finally:
            future.result()
