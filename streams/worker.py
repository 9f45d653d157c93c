"""Entry point of the stream worker: ``run_worker(settings)`` blocks until SIGINT/SIGTERM, then stops cleanly.

The CLI (``llmops streams``) calls :func:`run_worker`. ``python -m streams.worker [--config FILE]`` runs
the same with a :class:`~streams.config.StreamsConfig` read from a JSON file (used by tests that kill
the worker). Before consuming, it makes sure the topics it reads and writes exist and the ClickHouse
migrations are applied (both idempotent).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal

from schemas.topics import TOPICS, TopicSpec
from services.clickhouse.migrations import migrate
from services.kafka.admin import ensure_topics
from services.settings import Settings, get_settings
from streams.app import StreamsApp
from streams.config import StreamsConfig

log = logging.getLogger(__name__)


def _topic_specs(config: StreamsConfig) -> list[TopicSpec]:
    """The catalog spec of each configured topic (a renamed topic keeps its catalog layout)."""
    defaults = {
        "requests_topic": "llm.requests", "completions_topic": "llm.completions", "feedback_topic": "llm.feedback",
        "safety_topic": "llm.safety", "alerts_topic": "llm.alerts", "deadletter_topic": "llm.deadletter",
        "windows_topic": "llm.deployment-windows",
    }
    specs = []
    for field, catalog_name in defaults.items():
        base = TOPICS[catalog_name]
        name = getattr(config, field)
        specs.append(TopicSpec(name, base.payload, base.key, base.partitions, base.cleanup_policy,
                               base.retention_ms, base.description))
    return specs


def prepare(settings: Settings, config: StreamsConfig) -> None:
    """Create missing topics and apply pending migrations (idempotent, blocking)."""
    ensure_topics(settings, _topic_specs(config))
    migrate(settings)


async def serve(settings: Settings, config: StreamsConfig | None = None, app: StreamsApp | None = None) -> None:
    """Run the worker in the current event loop until SIGINT/SIGTERM (or ``app.stop()``)."""
    config = config or StreamsConfig()
    await asyncio.to_thread(prepare, settings, config)
    app = app or StreamsApp(settings, config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, app.stop)
        except (NotImplementedError, RuntimeError):  # not the main thread
            pass
    await app.run()


def run_worker(settings: Settings | None = None, config: StreamsConfig | None = None) -> None:
    """Run the stream worker until SIGINT/SIGTERM. ``settings`` defaults to ``get_settings()``."""
    asyncio.run(serve(settings or get_settings(), config))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams.worker", description=__doc__)
    parser.add_argument("--config", help="StreamsConfig as a JSON file")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    run_worker(get_settings(), StreamsConfig.load(args.config) if args.config else None)


if __name__ == "__main__":
    main()
