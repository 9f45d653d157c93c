"""``llmops demo``: the whole loop on one machine, from live traffic to an automatic, explained verdict.

It starts the local stack (or uses external Kafka/ClickHouse from the settings), two deployments of the
small model on Ray Serve (stable ``chat-v1``; canary ``chat-v2``, which by default really is worse: its
generation config lets it ramble up to 4x more tokens, so it is slower, costlier and graded lower), the
stream worker (a child process), the router, the judge and a console notifier; drives synthetic users
and a grader; shows traffic, weights and the latest decision while it runs; and ends when the canary is
rolled back (or promoted, with ``--healthy``), printing a summary read back from ClickHouse.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from aiokafka import AIOKafkaConsumer

from schemas.codec import DecodeError, decode
from schemas.rollouts import RolloutEvent
from schemas.topics import ROLLOUTS, dispatch_topic
from services.clickhouse.migrations import migrate
from services.demo.summary import print_summary
from services.demo.traffic import TrafficDriver
from services.infra.stack import LocalStack
from services.inference.spec import DeploymentSpec
from services.kafka.admin import ensure_topics
from services.kafka.config import aiokafka_consumer_kwargs
from services.kafka.from_beginning import assign_from_beginning
from services.notifier.config import NotifierConfig
from services.notifier.service import Notifier
from services.rollout.commands import RolloutError, abort_rollout, rollout_status, start_rollout
from services.rollout.judge import Judge
from services.rollout.spec import RolloutSpec
from services.router.router import Router
from services.settings import REPO_ROOT, Settings
from streams.config import StreamsConfig

Echo = Callable[[str], None]
ALIAS = "chat"
STABLE, CANARY = "chat-v1", "chat-v2"
FINAL_ACTIONS = ("rollback", "promote", "abort")


@dataclass(frozen=True)
class DemoOptions:
    healthy: bool = False
    rate_per_s: float = 2.0
    interval_s: float = 20.0
    timeout_s: float = 600.0
    keep_running: bool = True


def deployment_specs(healthy: bool) -> tuple[DeploymentSpec, DeploymentSpec]:
    """Stable and canary: the same small model; the bad canary's generation config rambles."""
    base = DeploymentSpec.from_yaml(REPO_ROOT / "deploy" / "inference" / "smollm2-cpu.yaml").model_dump()
    common = {**base, "model_alias": ALIAS, "num_replicas": 1, "max_batch_size": 8, "max_queued_requests": 16,
              "shutdown_grace_s": 5.0}
    stable = DeploymentSpec.model_validate({**common, "deployment_id": STABLE, "model_version": "v1",
                                            "generation": {"max_tokens": 24, "temperature": 0.0}})
    canary_generation = {"max_tokens": 24, "temperature": 0.0} if healthy else {"max_tokens": 96, "temperature": 0.0}
    canary = DeploymentSpec.model_validate({**common, "deployment_id": CANARY,
                                            "model_version": "v2" if healthy else "v2-verbose",
                                            "generation": canary_generation})
    return stable, canary


def rollout_spec(interval_s: float) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "alias": ALIAS, "stable": STABLE, "canary": CANARY, "steps": [25, 50, 100],
        "analysis_interval_seconds": interval_s, "min_samples": 6, "failure_threshold": 2, "alpha": 0.05,
        "gates": {
            "error_rate": {"comparison": "difference", "threshold": 0.05, "severe_threshold": 0.3},
            "p95_latency_ratio": {"threshold": 1.5, "severe_threshold": 2.5},
            "feedback_score_delta": {"threshold": 0.15},
            "cost_per_request_ratio": {"threshold": 1.5},
        },
    })


def streams_config(interval_s: float) -> StreamsConfig:
    return StreamsConfig(
        batch_interval_s=0.5, aggregate_interval_s=2.0, window_seconds=max(1, int(interval_s // 2)), window_grace_s=1.0,
        drift_reference_size=30, drift_current_size=30, drift_check_every=15, drift_check_interval_s=20.0,
    )


def _start_stream_worker(settings: Settings, config: StreamsConfig) -> subprocess.Popen[bytes]:
    run_dir = settings.data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg = run_dir / "demo-streams.json"
    cfg.write_text(config.model_dump_json())
    log = (run_dir / "demo-streams.log").open("ab")
    return subprocess.Popen(  # noqa: S603 - our own module
        [sys.executable, "-m", "streams.worker", "--config", str(cfg), "--log-level", "WARNING"],
        cwd=REPO_ROOT, env={**os.environ, **settings.to_env()}, stdout=log, stderr=subprocess.STDOUT,
    )


class RolloutWatcher:
    """Follows llm.rollouts (from the beginning) and keeps the latest event of one rollout."""

    def __init__(self, settings: Settings, rollout_id: str) -> None:
        self.settings = settings
        self.rollout_id = rollout_id
        self.events: list[RolloutEvent] = []
        self.finished = asyncio.Event()

    @property
    def latest(self) -> RolloutEvent | None:
        return self.events[-1] if self.events else None

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, None))
        await consumer.start()
        try:
            await assign_from_beginning(consumer, [ROLLOUTS.name])
            while True:
                for records in (await consumer.getmany(timeout_ms=200)).values():
                    for rec in records:
                        try:
                            ev = decode(rec.value, rec.headers, expect=RolloutEvent).payload
                        except DecodeError:
                            continue
                        if ev.rollout_id == self.rollout_id:
                            self.events.append(ev)
                            if ev.action in FINAL_ACTIONS:
                                self.finished.set()
        finally:
            await consumer.stop()


def _weights(ev: RolloutEvent | None) -> str:
    if ev is None:
        return "-"
    return " ".join(f"{d} {w:.0%}" for d, w in sorted(ev.weights.items()))


async def _run_loop(settings: Settings, opts: DemoOptions, echo: Echo) -> tuple[str, str, RolloutEvent | None]:
    spec = rollout_spec(opts.interval_s)
    for status in await rollout_status(settings, ALIAS):
        if status.active:
            await abort_rollout(settings, ALIAS, reason="superseded by a new demo run")
            echo(f"   aborted the unfinished rollout {status.rollout_id} of an earlier run")

    router = Router(settings, {ALIAS: STABLE})
    judge = Judge(settings)
    notifier = Notifier(settings, NotifierConfig(console=True, webhooks=[]), console=sys.stdout)
    tasks = [asyncio.create_task(s.run(), name=type(s).__name__) for s in (router, judge, notifier)]
    await asyncio.wait_for(router.ready.wait(), 60)

    run_id = uuid.uuid4().hex[:8]
    driver = TrafficDriver(settings, run_id, ALIAS, rate_per_s=opts.rate_per_s)
    started = await start_rollout(settings, spec)
    echo(f"== rollout {started.rollout_id}: {_weights(started)}; steps {spec.steps} %, "
         f"interval {spec.analysis_interval_seconds:.0f}s, rollback after {spec.failure_threshold} failed intervals")
    watcher = RolloutWatcher(settings, started.rollout_id)
    tasks += [asyncio.create_task(driver.run(), name="traffic"), asyncio.create_task(watcher.run(), name="watcher")]

    t0 = time.monotonic()
    try:
        while not watcher.finished.is_set() and time.monotonic() - t0 < opts.timeout_s:
            for task in tasks:
                if task.done() and task.exception() is not None:
                    raise RuntimeError(f"{task.get_name()} failed: {task.exception()!r}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watcher.finished.wait(), 5.0)
            s = driver.stats
            done = " ".join(f"{d}={n}" for d, n in sorted(s.completed.items())) or "none yet"
            latest = watcher.latest
            decision = f"{latest.action} (step {latest.step})" if latest else "-"
            echo(f"   t+{time.monotonic() - t0:4.0f}s sent {s.sent:4d} completed [{done}] feedback {s.feedback:4d} | "
                 f"weights {_weights(latest)} | last decision {decision}")
            if latest is not None and latest.action == "hold" and latest.reason:
                echo(f"        {latest.reason[:200]}")
    finally:
        driver.stop()
        router.stop()
        judge.stop()
        notifier.stop()
        await asyncio.sleep(1.0)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return started.rollout_id, driver.prefix, watcher.latest


def run_demo(settings: Settings, opts: DemoOptions, echo: Echo = print) -> bool:
    """Run the demo; True when it ended with the expected verdict (rollback, or promote with --healthy)."""
    import ray
    from ray import serve

    from services.inference.serve_app import serve_deployment

    t0 = time.monotonic()
    started_at = datetime.now(UTC)
    logging.getLogger("ray").setLevel(logging.WARNING)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)
    stack = LocalStack(settings)
    echo("== local stack")
    for st in stack.up():
        echo(f"   {st.name:<11} {'up' if st.running else 'DOWN'}  {st.location}" + ("" if st.managed else " (external)"))
    ensure_topics(settings)
    ensure_topics(settings, [dispatch_topic(STABLE), dispatch_topic(CANARY)])
    migrate(settings)

    worker = _start_stream_worker(settings, streams_config(opts.interval_s))
    echo(f"== stream worker started (pid {worker.pid}, log {settings.data_dir / 'run' / 'demo-streams.log'})")
    stable, canary = deployment_specs(opts.healthy)
    try:
        echo(f"== starting Ray Serve: {STABLE} (max_tokens 24) and {CANARY} "
             f"({'same config' if opts.healthy else 'max_tokens 96: rambles'}), model {stable.reported_model_name}")
        # Replica logs (model loading progress bars) go to Ray's log files, not to this console.
        ray.init(log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
        for spec in (stable, canary):
            serve_deployment(spec, settings=settings)
        echo(f"   replicas ready after {time.monotonic() - t0:.0f}s")
        rollout_id, prefix, final = asyncio.run(_run_loop(settings, opts, echo))
        expected = "promote" if opts.healthy else "rollback"
        echo("== verdict")
        if final is None or final.action not in FINAL_ACTIONS:
            echo(f"   no verdict within {opts.timeout_s:.0f}s (last: {final.action if final else 'none'})")
        else:
            echo(f"   {final.action.upper()}: {final.reason}")
            echo(f"   weights now: {_weights(final)}")
        time.sleep(3.0)  # let the stream worker flush the last batch before reading ClickHouse
        print_summary(settings, rollout_id=rollout_id, deployments=[STABLE, CANARY], prefix=prefix, since=started_at, echo=echo)
        echo(f"== done in {time.monotonic() - t0:.0f}s")
        return final is not None and final.action == expected
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()
        with contextlib.suppress(Exception):
            ray.shutdown()
        worker.terminate()
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
        if opts.keep_running:
            echo("   the local stack keeps running; stop it with `llmops infra down`")
        else:
            stack.down()
