"""``llmops demo``: the whole loop on one machine, from live traffic to an automatic, explained verdict.

It starts the local stack (or uses external Kafka/ClickHouse from the settings), two deployments of the
small model on Ray Serve with prefix caching (stable ``chat-v1``; canary ``chat-v2``, which by default really is
worse: its generation config lets it ramble up to 4x more tokens, so it is slower, costlier and graded lower), the
stream worker, the judge and the OpenAI-compatible gateway (child processes, as ``llmops streams``, ``llmops rollout
judge`` and ``llmops gateway`` run them), the router and a console notifier. Synthetic users call the gateway with the
official ``openai`` client and a grader scores every answer. Stable alone serves a short warm-up (so the judge knows
stable's latency before the canary arrives), then the rollout starts; the demo shows traffic, weights and the latest
decision while it runs and ends when the canary is rolled back (or promoted, with ``--healthy``), printing how long
after the canary's first request that happened, a summary read back from ClickHouse, and the path of the rollout
report (one HTML page).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import httpx
from aiokafka import AIOKafkaConsumer

from schemas.codec import DecodeError, decode
from schemas.rollouts import RolloutEvent
from schemas.topics import ROLLOUTS, dispatch_topic
from services.core.clickhouse.migrations import migrate
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs
from services.core.kafka.from_beginning import assign_from_beginning
from services.core.settings import Settings
from services.demo.summary import print_summary, seconds_to_verdict, wait_stored
from services.demo.traffic import TENANT, TrafficDriver
from services.gateway.keys import create_key
from services.inference.spec import DeploymentSpec, resolve_spec_path
from services.infra.process import free_port
from services.infra.stack import LocalStack
from services.notifier.config import NotifierConfig
from services.notifier.service import Notifier
from services.report.write import write_report
from services.rollout.commands import abort_rollout, rollout_status, start_rollout
from services.rollout.spec import RolloutSpec
from services.router.router import Router
from streams.config import StreamsConfig

Echo = Callable[[str], None]
ALIAS = "chat"
STABLE, CANARY = "chat-v1", "chat-v2"
FINAL_ACTIONS = ("rollback", "promote", "abort")


@dataclass(frozen=True)
class EngineOptions:
    """The builtin engine's optimizations, for both deployments (so the canary differs only by its generation config)."""

    quantization: Literal["int8"] | None = None
    speculative_tokens: int = 0
    prefix_caching: bool = True  # the synthetic users share a system prompt

    def describe(self) -> str:
        parts = [f"quantization {self.quantization}" if self.quantization else "fp32",
                 f"prompt-lookup speculation of {self.speculative_tokens} tokens" if self.speculative_tokens else "",
                 "prefix caching" if self.prefix_caching else "no prefix caching"]
        return ", ".join(p for p in parts if p)


@dataclass(frozen=True)
class DemoOptions:
    healthy: bool = False
    rate_per_s: float = 2.0
    warmup_s: float = 30.0
    timeout_s: float = 600.0
    keep_running: bool = True
    engine: EngineOptions = field(default_factory=EngineOptions)


def deployment_specs(healthy: bool, engine: EngineOptions | None = None) -> tuple[DeploymentSpec, DeploymentSpec]:
    """Stable and canary: the same small model and engine options; the bad canary's generation config rambles."""
    engine = engine or EngineOptions()
    base = DeploymentSpec.from_yaml(resolve_spec_path("smollm2-cpu")).model_dump()
    common = {**base, "model_alias": ALIAS, "num_replicas": 1, "max_batch_size": 8, "max_queued_requests": 16,
              "shutdown_grace_s": 5.0, "prefix_caching": engine.prefix_caching, "quantization": engine.quantization,
              "speculative_tokens": engine.speculative_tokens}
    stable = DeploymentSpec.model_validate({**common, "deployment_id": STABLE, "model_version": "v1",
                                            "generation": {"max_tokens": 24, "temperature": 0.0}})
    # The bad canary samples at temperature 1.0 with room for 96 tokens: this small model then rarely stops early,
    # so its answers are longer, slower, costlier and graded lower (greedy, it mostly ends within ~30 tokens anyway).
    canary_generation = {"max_tokens": 24, "temperature": 0.0} if healthy else {"max_tokens": 96, "temperature": 1.0}
    canary = DeploymentSpec.model_validate({**common, "deployment_id": CANARY,
                                            "model_version": "v2" if healthy else "v2-verbose",
                                            "generation": canary_generation})
    return stable, canary


def rollout_spec() -> RolloutSpec:
    """The demo's rollout: one step at 50 % (passing it promotes), judged after every 1-second window.

    Small sample minimums fit the demo's 2 requests/s; the tests stay valid however often the judge looks. The slow
    threshold is stable's p95 over the warm-up's ~40 requests, when stable had the two cores to itself; once the canary
    shares them both sides are slower, so a healthy canary's slow share sits near stable's (about 25 % here) and
    the margin for the difference is a generous 0.3. Rollbacks do not depend on margins: only on the tests (an
    e-value over its boundary, or the two sides' confidence bounds apart by more than the gate allows).
    """
    return RolloutSpec.model_validate({
        "alias": ALIAS, "stable": STABLE, "canary": CANARY, "steps": [50, 100], "alpha": 0.05,
        "min_samples": 20, "min_step_seconds": 30, "max_step_seconds": 300, "report_seconds": 10,
        "gates": {
            "error_rate": {"max_ratio": 1.0, "margin": 0.1},
            "slow_request_rate": {"max_ratio": 1.0, "margin": 0.3, "stable_quantile": 0.95, "calibration_requests": 40},
            "safety_finding_rate": {"max_ratio": 1.0, "margin": 0.1},
            "feedback_score_delta": {"threshold": 0.15, "margin": 0.15, "min_samples": 15},
            "cost_per_request_ratio": {"threshold": 1.3, "margin": 1.3},
        },
    })


def streams_config() -> StreamsConfig:
    """1-second windows (the default), quick batches, and drift checks that fit a small canary."""
    return StreamsConfig(batch_interval_s=0.25, drift_reference_size=30, drift_current_size=30, drift_check_every=15,
                         drift_check_interval_s=20.0)


def _start_child(settings: Settings, name: str, args: list[str]) -> subprocess.Popen[bytes]:
    """A component as its own process (the way its command runs it), logging to LLMOPS_DATA_DIR/run/demo-NAME.log."""
    run_dir = settings.data_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    log = (run_dir / f"demo-{name}.log").open("ab")
    return subprocess.Popen([sys.executable, "-m", *args], env={**os.environ, **settings.to_env()}, stdout=log,
                            stderr=subprocess.STDOUT)


def _start_stream_worker(settings: Settings, config: StreamsConfig) -> subprocess.Popen[bytes]:
    cfg = settings.data_dir / "run" / "demo-streams.json"
    cfg.parent.mkdir(parents=True, exist_ok=True)
    cfg.write_text(config.model_dump_json())
    return _start_child(settings, "streams", ["streams.worker", "--config", str(cfg), "--log-level", "WARNING"])


def _start_gateway(settings: Settings, port: int, run_id: str) -> subprocess.Popen[bytes]:
    return _start_child(settings, "gateway", ["services.cli.main", "gateway", "--model", ALIAS, "--port", str(port),
                                              "--instance", f"gw-demo-{run_id}"])


async def _wait_gateway(base_url: str, api_key: str, child: subprocess.Popen[bytes], timeout_s: float = 60.0) -> None:
    """Until ``GET /v1/models`` answers 200 (the gateway is listening and knows its key)."""
    deadline = time.monotonic() + timeout_s
    async with httpx.AsyncClient(timeout=2.0) as client:
        while True:
            if child.poll() is not None:
                raise RuntimeError(f"the gateway exited with status {child.returncode} (see demo-gateway.log)")
            with contextlib.suppress(httpx.HTTPError):
                resp = await client.get(f"{base_url}/models", headers={"Authorization": f"Bearer {api_key}"})
                if resp.status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"the gateway did not answer within {timeout_s:.0f}s (see demo-gateway.log)")
            await asyncio.sleep(0.2)


class RolloutWatcher:
    """Follows llm.rollouts (from the beginning) and keeps the latest event of one rollout."""

    def __init__(self, settings: Settings, rollout_id: str) -> None:
        self.settings = settings
        self.rollout_id = rollout_id
        self.events: list[RolloutEvent] = []
        self.finished = asyncio.Event()
        self.finished_at: datetime | None = None

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
                            if ev.action in FINAL_ACTIONS and not self.finished.is_set():
                                self.finished_at = datetime.now(UTC)
                                self.finished.set()
        finally:
            await consumer.stop()


def _weights(ev: RolloutEvent | None) -> str:
    if ev is None:
        return "-"
    return " ".join(f"{d} {w:.0%}" for d, w in sorted(ev.weights.items()))


@dataclass(frozen=True)
class LoopResult:
    rollout_id: str
    prefix: str
    final: RolloutEvent | None
    verdict_at: datetime | None
    """Wall-clock time the demo saw the final decision on llm.rollouts."""
    answered: int
    """Requests the gateway answered in this run."""


def _progress(driver: TrafficDriver, latest: RolloutEvent | None, elapsed: float) -> str:
    s = driver.stats
    done = " ".join(f"{d}={n}" for d, n in sorted(s.completed.items())) or "none yet"
    decision = f"{latest.action} (step {latest.step})" if latest else "-"
    return (f"   t+{elapsed:4.0f}s sent {s.sent:4d} answered [{done}] feedback {s.feedback:4d} | "
            f"weights {_weights(latest)} | last decision {decision}")


async def _run_loop(settings: Settings, opts: DemoOptions, run_id: str, echo: Echo) -> LoopResult:
    _cancel_on_signals()
    spec = rollout_spec()
    for status in await rollout_status(settings, ALIAS):
        if status.active:
            await abort_rollout(settings, ALIAS, reason="superseded by a new demo run")
            echo(f"   aborted the unfinished rollout {status.rollout_id} of an earlier run")
        elif status.weights.get(STABLE, 0.0) < 1.0:  # an earlier run promoted its canary: start from stable again
            await abort_rollout(settings, ALIAS, reason="a new demo run starts from stable", ended_too=True)
            echo(f"   {ALIAS} back to {STABLE} (an earlier run's rollout {status.rollout_id} ended with {status.action})")

    router = Router(settings, {ALIAS: STABLE})
    # Alerts older than a minute belong to an earlier run (one raised after that run's notifier stopped is still
    # unread in the group): skipped, so the console shows this run's alerts only.
    notifier = Notifier(settings, NotifierConfig(console=True, webhooks=[], max_age_s=60.0), console=sys.stdout)
    tasks = [asyncio.create_task(s.run(), name=type(s).__name__) for s in (router, notifier)]
    await asyncio.wait_for(router.ready.wait(), 60)

    _, api_key = await asyncio.to_thread(create_key, settings, TENANT, name="demo")
    port = free_port()
    gateway = _start_gateway(settings, port, run_id)
    base_url = f"http://127.0.0.1:{port}/v1"
    driver: TrafficDriver | None = None
    watcher: RolloutWatcher | None = None
    started: RolloutEvent | None = None
    try:
        await _wait_gateway(base_url, api_key, gateway)
        echo(f"== gateway at {base_url} (pid {gateway.pid}); users call it with the openai client")
        driver = TrafficDriver(settings, run_id, ALIAS, base_url=base_url, api_key=api_key, rate_per_s=opts.rate_per_s)
        tasks.append(asyncio.create_task(driver.run(), name="traffic"))

        echo(f"== warm-up: {opts.warmup_s:.0f}s of traffic on stable alone (the judge learns stable's latency)")
        t0 = time.monotonic()
        while time.monotonic() - t0 < opts.warmup_s or not driver.stats.completed.get(STABLE):
            _raise_failed(tasks)
            await asyncio.sleep(5.0)
            echo(_progress(driver, None, time.monotonic() - t0))
            if time.monotonic() - t0 > opts.timeout_s:
                raise RuntimeError("stable answered nothing during the warm-up")

        started = await start_rollout(settings, spec)
        echo(f"== rollout {started.rollout_id}: {_weights(started)}; steps {spec.steps} %, alpha {spec.alpha}; "
             f"the judge decides after every 1-second window")
        watcher = RolloutWatcher(settings, started.rollout_id)
        tasks.append(asyncio.create_task(watcher.run(), name="watcher"))
        t0 = time.monotonic()
        while not watcher.finished.is_set() and time.monotonic() - t0 < opts.timeout_s:
            _raise_failed(tasks)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(watcher.finished.wait(), 5.0)
            latest = watcher.latest
            echo(_progress(driver, latest, time.monotonic() - t0))
            if latest is not None and latest.action == "hold" and latest.reason:
                echo(f"        {latest.reason[:240]}")
    finally:
        if driver is not None:
            driver.stop()
        router.stop()
        notifier.stop()
        gateway.terminate()
        for task in tasks:
            if task.get_name() == "watcher":  # it follows the topic until cancelled
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.to_thread(_wait_child, gateway)
    assert started is not None and driver is not None and watcher is not None
    return LoopResult(started.rollout_id, driver.prefix, watcher.latest, watcher.finished_at,
                      driver.stats.total_completed())


def _raise_failed(tasks: list[asyncio.Task[None]]) -> None:
    for task in tasks:
        if task.done() and not task.cancelled() and task.exception() is not None:
            raise RuntimeError(f"{task.get_name()} failed: {task.exception()!r}")


def _wait_child(child: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    """Wait for a child that was asked to stop (SIGTERM); kill it if it does not stop in time."""
    try:
        child.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()


def _cancel_on_signals() -> None:
    """While the loop runs, SIGINT and SIGTERM cancel it (Ray replaces Python's SIGINT handler, so asyncio's own
    Ctrl-C handling is not in place): every ``finally`` runs and ``asyncio.run`` raises CancelledError."""
    loop, main = asyncio.get_running_loop(), asyncio.current_task()
    assert main is not None
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, main.cancel)


def _sigterm_as_sigint() -> None:
    """SIGTERM stops the demo like Ctrl-C: the run unwinds, and every child, replica and server it started stops."""
    signal.signal(signal.SIGTERM, lambda _signum, _frame: signal.raise_signal(signal.SIGINT))


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

    worker = _start_stream_worker(settings, streams_config())
    echo(f"== stream worker started (pid {worker.pid}, log {settings.data_dir / 'run' / 'demo-streams.log'})")
    judge = _start_child(settings, "judge", ["services.rollout.judge_app", "--log-level", "WARNING"])
    echo(f"== judge started (pid {judge.pid}, log {settings.data_dir / 'run' / 'demo-judge.log'})")
    stable, canary = deployment_specs(opts.healthy, opts.engine)
    try:
        echo(f"== starting Ray Serve: {STABLE} (max_tokens 24) and {CANARY} "
             f"({'same config' if opts.healthy else 'max_tokens 96, temperature 1.0: rambles'}), "
             f"model {stable.reported_model_name}, builtin engine: {opts.engine.describe()}")
        # Replica logs (model loading progress bars) go to Ray's log files, not to this console.
        ray.init(log_to_driver=False, include_dashboard=False, logging_level=logging.WARNING)
        _sigterm_as_sigint()  # after ray.init, which installs a SIGTERM handler that aborts the driver
        for spec in (stable, canary):
            serve_deployment(spec, settings=settings)
        echo(f"   replicas ready after {time.monotonic() - t0:.0f}s")
        result = asyncio.run(_run_loop(settings, opts, uuid.uuid4().hex[:8], echo))
        _sigterm_as_sigint()  # the loop's handlers are gone with it
        final = result.final
        expected = "promote" if opts.healthy else "rollback"
        echo("== verdict")
        if final is None or final.action not in FINAL_ACTIONS:
            echo(f"   no verdict within {opts.timeout_s:.0f}s (last: {final.action if final else 'none'})")
        else:
            echo(f"   {final.action.upper()}: {final.reason}")
            echo(f"   weights now: {_weights(final)}")
            seconds = seconds_to_verdict(settings, result.prefix, CANARY, result.verdict_at)
            if seconds is not None:
                echo(f"   {final.action} seen {seconds:.1f}s after the canary's first request")
        wait_stored(settings, result.prefix, result.answered)  # the stream worker's last batches
        print_summary(settings, rollout_id=result.rollout_id, deployments=[STABLE, CANARY], prefix=result.prefix,
                      since=started_at, echo=echo)
        report = write_report(settings, ALIAS, result.rollout_id)
        echo(f"== rollout report: {report}")
        echo(f"== done in {time.monotonic() - t0:.0f}s")
        return final is not None and final.action == expected
    except (KeyboardInterrupt, asyncio.CancelledError):
        echo("== interrupted: stopping the replicas, the stream worker and the judge")
        return False
    finally:
        with contextlib.suppress(Exception):
            serve.shutdown()  # type: ignore[no-untyped-call]  # Ray Serve's shutdown() is unannotated
        with contextlib.suppress(Exception):
            ray.shutdown()
        for child in (judge, worker):
            child.terminate()
        for child in (judge, worker):
            _wait_child(child)
        if opts.keep_running:
            echo("   the local stack keeps running; stop it with `llmops infra down`")
        else:
            stack.down()
