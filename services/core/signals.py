"""Graceful stop on SIGINT and SIGTERM for every long-running command (Kubernetes stops pods with SIGTERM).

:func:`run_until_signalled` runs a service's coroutine in a fresh event loop. The first SIGINT or SIGTERM
calls the service's own ``stop`` (finish or release in-flight work, commit what is done) and the
coroutine returns normally; a second signal cancels it outright. The plain asyncio services that run until
stopped (router, notifier, gateway) go through here, so they stop the same way. The Faust apps (stream worker,
judge) stop through Faust's own worker, which handles SIGINT and SIGTERM the same way: agents stop, what was
acked is committed (``services/core/faust_runtime.py``). ``llmops serve`` and ``llmops demo`` drive Ray Serve
from a blocking driver, where Ray installs signal handlers of its own: each catches SIGTERM itself after
``ray.init`` and tears its deployments down (``serve_app.serve_deployment``, ``demo.run``).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(RuntimeError):
    """A second signal arrived while the service was still stopping: it was cancelled."""


async def serve_until_signalled(main: Awaitable[T], stop: Callable[[], None]) -> T:
    """Await ``main`` in the running loop; the first stop signal calls ``stop``, a second one cancels ``main``."""
    loop = asyncio.get_running_loop()
    task: asyncio.Future[T] = asyncio.ensure_future(main)
    seen: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        seen.append(sig)
        if len(seen) == 1:
            log.info("%s received: stopping gracefully (send it again to stop at once)", sig.name)
            stop()
        else:
            log.warning("%s received again: cancelling", sig.name)
            task.cancel()

    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        return await task
    except asyncio.CancelledError:
        if len(seen) > 1:
            raise Interrupted(f"cancelled by a second {seen[-1].name}") from None
        raise
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


def run_until_signalled(main: Callable[[], Awaitable[T]], stop: Callable[[], None]) -> T:
    """Run ``main()`` in a new event loop until it returns; SIGINT/SIGTERM stop it through ``stop``."""

    async def go() -> T:
        return await serve_until_signalled(main(), stop)

    return asyncio.run(go())
