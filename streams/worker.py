"""Entry point of the stream worker: ``run_worker(settings, config)`` runs the Faust app until SIGINT/SIGTERM.

The CLI (``llmops streams``) calls :func:`run_worker`; ``python -m streams.worker [--config FILE]`` does the same
with a :class:`~streams.config.StreamsConfig` read from a JSON file (tests and the demo run it as a child process),
and ``faust -A streams.app worker`` runs the same app configured from the environment. Before consuming, the topics
it reads and writes are created and the ClickHouse migrations applied (both idempotent). Faust's worker handles
the signals: SIGTERM or SIGINT stop it gracefully (acked offsets are committed, unacked batches are replayed by
the next owner of their partitions).
"""

from __future__ import annotations

import argparse
import logging

import faust

from services.core import metrics
from services.core.settings import Settings, get_settings
from streams.app import create_app, prepare
from streams.config import StreamsConfig

log = logging.getLogger(__name__)


def run_worker(settings: Settings | None = None, config: StreamsConfig | None = None, log_level: str = "INFO") -> None:
    """Run the stream app until SIGINT/SIGTERM. ``settings`` defaults to ``get_settings()``, ``config`` to the
    environment (``LLMOPS_STREAMS_*``)."""
    settings = settings or get_settings()
    config = config or StreamsConfig()
    prepare(settings, config)
    app = create_app(settings, config)
    server = metrics.start_metrics_server(settings)  # None unless LLMOPS_METRICS_PORT is set
    if server is not None:
        log.info("streams: metrics on %s", server.url)
    worker = faust.Worker(app, loglevel=log_level.upper(), redirect_stdouts=False)
    worker.execute_from_commandline()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m streams.worker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="StreamsConfig as a JSON file (default: LLMOPS_STREAMS_* variables)")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    run_worker(get_settings(), StreamsConfig.load(args.config) if args.config else None, args.log_level)


if __name__ == "__main__":
    main()
