"""The stream worker as a faust-streaming app: ``streams.app:app`` (``faust -A streams.app worker``, ``llmops streams``).

Agents (each concurrency 1, over ``noack_take`` batches, acking only after the batch's side effects were
acknowledged; see :mod:`services.core.faust_runtime` for why and how):

* one per input topic -- ``llm.requests``, ``llm.completions``, ``llm.feedback`` -- running the concern modules
  over its batch (:mod:`streams.pipeline`), so every record crosses Faust's machinery once (``agent_layout:
  single`` puts the three topics in one agent instead);
* ``llm.deadletter`` -> the ``dead_letters`` table (every service's dead letters, originals redacted);
* ``llm.alerts`` -> ``alerts_log`` (every alert, whoever raised it, once);
* ``llm.deployment-windows`` -> safety-spike incidents.

Timers publish ended deployment windows (every ``window_tick_s``), recompute touched minutes
(``aggregate_interval_s``), start due drift checks, retry feedback whose completion was not known yet, and record
which windows were published. On assignment, the windows of the assigned completions partitions are rebuilt
from ClickHouse and republished (a restart loses no window); on start, recently ingested minutes are recomputed.

The consumer group is ``group_id``; partitions are the unit of parallelism (run more workers with the same
configuration: the three input topics are co-partitioned, so partition p of each goes to the same worker).
Configuration: the settings (``LLMOPS_*``) and :class:`streams.config.StreamsConfig` (``LLMOPS_STREAMS_*``).
"""

from __future__ import annotations

import logging
from typing import Any

import faust
from faust.types import TP

from schemas.topics import TOPICS, TopicSpec
from services.core.clickhouse.migrations import migrate
from services.core.faust_runtime import BatchGuard, batch_agent, guarded_task, guarded_timer, make_app, publish
from services.core.kafka.admin import ensure_topics
from services.core.settings import Settings, get_settings
from streams.config import StreamsConfig
from streams.pipeline import Pipeline

log = logging.getLogger(__name__)


def topic_specs(config: StreamsConfig) -> list[TopicSpec]:
    """The catalog spec of each configured topic (a renamed topic keeps its catalog layout)."""
    defaults = {
        "requests_topic": "llm.requests", "completions_topic": "llm.completions", "feedback_topic": "llm.feedback",
        "safety_topic": "llm.safety", "alerts_topic": "llm.alerts", "deadletter_topic": "llm.deadletter",
        "windows_topic": "llm.deployment-windows", "review_topic": "llm.review", "rollouts_topic": "llm.rollouts",
    }
    return [TOPICS[catalog_name].renamed(getattr(config, field)) for field, catalog_name in defaults.items()]


def prepare(settings: Settings, config: StreamsConfig) -> None:
    """Create missing topics and apply pending migrations (idempotent, blocking): run before the worker starts."""
    ensure_topics(settings, topic_specs(config))
    migrate(settings)


def create_app(settings: Settings, config: StreamsConfig) -> faust.App:
    """The stream app for these settings and this configuration (agents, timers and hooks registered)."""
    cfg = config
    app = make_app(cfg.group_id, settings, web_port=cfg.web_port, commit_interval_s=cfg.commit_interval_s)
    pipeline = Pipeline(settings, cfg, lambda messages: publish(app, messages))
    app.pipeline = pipeline  # type: ignore[attr-defined]  # for tests and the benchmark

    def guard(name: str, handler: Any) -> BatchGuard:
        return BatchGuard(name, handler, pipeline.handle_poison, retry_initial_s=cfg.retry_initial_s,
                          retry_max_s=cfg.retry_max_s)

    guards: dict[str, BatchGuard] = {}
    if cfg.agent_layout == "single":
        guards["streams.inputs"] = guard("streams.inputs", pipeline.handle_inputs)
        batch_agent(app, [cfg.requests_topic, cfg.completions_topic, cfg.feedback_topic], guards["streams.inputs"],
                    batch_size=cfg.batch_size, within_s=cfg.batch_interval_s)
    else:
        for name, topic, handler in (("streams.requests", cfg.requests_topic, pipeline.handle_requests),
                                     ("streams.completions", cfg.completions_topic, pipeline.handle_completions),
                                     ("streams.feedback", cfg.feedback_topic, pipeline.handle_feedback)):
            guards[name] = guard(name, handler)
            batch_agent(app, [topic], guards[name], batch_size=cfg.batch_size, within_s=cfg.batch_interval_s)
    for name, topic, handler in (("streams.deadletters", cfg.deadletter_topic, pipeline.handle_dead_letters),
                                 ("streams.alerts", cfg.alerts_topic, pipeline.handle_alerts),
                                 ("streams.incidents", cfg.windows_topic, pipeline.handle_windows)):
        guards[name] = guard(name, handler)
        batch_agent(app, [topic], guards[name], batch_size=cfg.batch_size, within_s=cfg.batch_interval_s)
    app.guards = guards  # type: ignore[attr-defined]  # faust.App declares no such attribute: an extra one on this instance

    guarded_timer(app, cfg.window_tick_s, pipeline.publish_windows, "streams.windows.publish")
    guarded_timer(app, 2.0, pipeline.save_window_progress, "streams.windows.progress")
    guarded_timer(app, 2.0, pipeline.retry_parked_feedback, "streams.windows.parked")
    guarded_timer(app, cfg.aggregate_interval_s, pipeline.flush_aggregates, "streams.aggregates")
    guarded_timer(app, 1.0, pipeline.check_drift, "streams.drift")
    guarded_task(app, pipeline.rollout_flags.run, "streams.review.rollouts")

    async def log_stats() -> None:
        log.info("streams: stats %s", "; ".join(
            [f"{name}: {g.stats.records} records in {g.stats.batches} batches, {g.stats.poisoned} poisoned, "
             f"{g.stats.retries} retries" for name, g in guards.items()]
            + [pipeline.summary()]))

    guarded_timer(app, 30.0, log_stats, "streams.stats")

    async def recover_aggregates() -> None:
        try:
            await pipeline.recover_aggregates()
        except Exception:  # a failed recovery is logged; new batches are aggregated as usual
            log.exception("streams: recomputing recent minutes failed")

    app.task(recover_aggregates)

    @app.on_before_shutdown.connect
    async def on_shutdown(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        pipeline.rollout_flags.stop()
        if pipeline.drift is not None:
            pipeline.drift.close()

    @app.on_partitions_assigned.connect
    async def on_assigned(sender: Any, /, *args: Any, signal: Any, **kwargs: Any) -> None:
        assigned: set[TP] = set(args[0] if args else kwargs.get("assigned", set()))
        mine = {tp.partition for tp in assigned if tp.topic == cfg.completions_topic}
        if pipeline.windows is not None:
            pipeline.windows.revoke(set(pipeline.windows.partitions) - mine)
            pipeline.windows.assign(mine)
        log.info("streams: ready; assigned %d partition(s): %s", len(assigned),
                 ", ".join(sorted(f"{tp.topic}/{tp.partition}" for tp in assigned)) or "none")

    return app


def __getattr__(name: str) -> Any:
    """``streams.app:app``, built on first access from ``get_settings()`` and ``StreamsConfig()`` (environment)."""
    if name == "app":
        settings, config = get_settings(), StreamsConfig()
        prepare(settings, config)
        globals()["app"] = built = create_app(settings, config)
        return built
    raise AttributeError(name)
