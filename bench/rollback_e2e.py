"""End-to-end benchmark of the rollback loop on real processes, no model: how fast a bad canary loses its traffic.

One command: ``python bench/rollback_e2e.py [--runs 3] [--rate 50] [--canary-pct 10]``. It starts, on free
ports under a temporary directory, the local stack (broker and ClickHouse), the stream worker (``python -m
streams.worker`` with 1-second deployment windows), the router (``llmops router``) and the judge (``python -m
services.rollout.judge_app``), each its own process. In this process: fake replicas consume the dispatch topics
and answer every request with a valid ``Completion`` after a simulated latency (lognormal, median 400 ms), with
controlled errors and PII; a driver sends ``--rate`` requests/s of the alias ``chat``. After a warm-up on stable
alone, it starts one rollout per run (a fresh canary deployment each time, so its drift monitor starts fresh),
canary at ``--canary-pct``%, and waits for the verdict:

* latency x3 and PII in 30% of the canary's answers (``--runs`` runs each): the time from the canary's first
  request (the router's dispatch record) to the rollback event on ``llm.rollouts`` (both Kafka record
  timestamps), and from the rollback event to the router's last dispatch to the canary;
* a healthy canary: promoted (never rolled back), and how long after its first request.

Reported times include the whole pipeline: replica latency, the stream worker's batching, ClickHouse, window
publication, the judge, the producer and the broker. The machine is shared, so they are indicative.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from schemas import (
    Completion,
    CompletionError,
    DeploymentWindow,
    InferenceRequest,
    Message,
    RolloutEvent,
    decode,
    encode,
    make_event,
)
from schemas.topics import COMPLETIONS, DEPLOYMENT_WINDOWS, REQUESTS, ROLLOUTS, dispatch_topic
from services.core.clickhouse.migrations import migrate
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import aiokafka_consumer_kwargs, aiokafka_producer_kwargs
from services.core.kafka.from_beginning import assign_from_beginning
from services.core.settings import Settings
from services.infra.process import free_port
from services.infra.stack import LocalStack
from services.rollout.commands import abort_rollout, start_rollout
from services.rollout.spec import RolloutSpec

ALIAS = "chat"
STABLE = "chat-v1"
MODEL = "SmolLM2-135M-Instruct"  # priced in the stream worker's price table
PII_TEXT = "Sure, write to john.smith@example.com or call +1 415 555 0134 for the refund."
PLAIN_TEXT = "Sure, the refund takes three to five business days once the form is in."


@dataclass(frozen=True)
class Behaviour:
    latency_median_ms: float = 400.0
    error_rate: float = 0.01
    pii_rate: float = 0.0


@dataclass
class Run:
    scenario: str
    canary: str
    behaviour: Behaviour
    rollout_id: str = ""
    first_dispatch_ms: int | None = None
    last_dispatch_ms: int | None = None
    verdict: RolloutEvent | None = None
    verdict_ms: int | None = None


@dataclass
class Loop:
    """The bench's in-process parts: fake replicas, the traffic driver, and a follower of llm.rollouts."""

    settings: Settings
    rate: float
    behaviours: dict[str, Behaviour] = field(default_factory=dict)
    runs: dict[str, Run] = field(default_factory=dict)
    """By canary deployment."""
    verdicts: dict[str, tuple[RolloutEvent, int]] = field(default_factory=dict)
    """By rollout id: the first final event and its record timestamp."""
    answered: int = 0
    sent: int = 0
    window_lags_s: list[float] = field(default_factory=list)
    """Record timestamp of each window on llm.deployment-windows minus the window's end (publication delay)."""
    windows_seen: asyncio.Event = field(default_factory=asyncio.Event)
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    verdict_arrived: asyncio.Event = field(default_factory=asyncio.Event)
    producer: AIOKafkaProducer | None = None

    async def verdict_of(self, rollout_id: str, timeout_s: float) -> tuple[RolloutEvent, int] | None:
        """The rollout's first final event and its record timestamp, waiting at most ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            self.verdict_arrived.clear()
            if rollout_id in self.verdicts:
                return self.verdicts[rollout_id]
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.verdict_arrived.wait(), remaining)

    async def replicas(self, deployments: list[str]) -> None:
        consumer = AIOKafkaConsumer(*[dispatch_topic(d).name for d in deployments],
                                    **aiokafka_consumer_kwargs(self.settings, "bench.replicas"))
        await consumer.start()
        rng = random.Random(7)
        pending: set[asyncio.Task[None]] = set()
        try:
            while not self.stop.is_set():
                for tp, records in (await consumer.getmany(timeout_ms=100)).items():
                    deployment = tp.topic.removeprefix("llm.dispatch.")
                    for rec in records:
                        req: InferenceRequest = decode(rec.value, rec.headers, expect=InferenceRequest).payload
                        run = self.runs.get(deployment)
                        if run is not None:
                            run.first_dispatch_ms = min(run.first_dispatch_ms or rec.timestamp, rec.timestamp)
                            run.last_dispatch_ms = max(run.last_dispatch_ms or rec.timestamp, rec.timestamp)
                        task = asyncio.create_task(self._answer(req, deployment, rng))
                        pending.add(task)
                        task.add_done_callback(pending.discard)
        finally:
            for task in pending:
                task.cancel()
            await consumer.stop()

    async def _answer(self, req: InferenceRequest, deployment: str, rng: random.Random) -> None:
        b = self.behaviours.get(deployment, Behaviour())
        total_ms = rng.lognormvariate(math.log(b.latency_median_ms), 0.35)
        await asyncio.sleep(total_ms / 1000)
        failed = rng.random() < b.error_rate
        text = "" if failed else (PII_TEXT if rng.random() < b.pii_rate else PLAIN_TEXT)
        completion = Completion(
            request_id=req.request_id, tenant=req.tenant, application=req.application, model_alias=req.model_alias,
            deployment_id=deployment, model_name=MODEL, model_version=deployment, prompt_text="refund?", text=text,
            finish_reason="error" if failed else "stop", prompt_tokens=12, completion_tokens=0 if failed else 18,
            ttft_ms=total_ms * 0.3, total_ms=total_ms, routing_weight=req.routing_weight,
            error=CompletionError(kind="internal", message="simulated failure") if failed else None,
        )
        assert self.producer is not None
        value, headers = encode(make_event(completion, source="bench.replica", tenant_id=req.tenant))
        await self.producer.send_and_wait(COMPLETIONS.name, value, key=req.request_id.encode(), headers=headers)
        self.answered += 1

    async def traffic(self) -> None:
        assert self.producer is not None
        began = time.monotonic()
        i = 0
        while not self.stop.is_set():
            req = InferenceRequest(request_id=f"bench-{uuid.uuid4().hex[:12]}", tenant="bench", application="bench",
                                   model_alias=ALIAS, messages=[Message(role="user", content="refund?")])
            value, headers = encode(make_event(req, source="bench.users", tenant_id="bench"))
            await self.producer.send(REQUESTS.name, value, key=req.request_id.encode(), headers=headers)
            self.sent += 1
            i += 1
            await asyncio.sleep(max(0.0, began + i / self.rate - time.monotonic()))

    async def follow_windows(self) -> None:
        consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, None))
        await consumer.start()
        try:
            await assign_from_beginning(consumer, [DEPLOYMENT_WINDOWS.name])
            while not self.stop.is_set():
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    for rec in records:
                        w: DeploymentWindow = decode(rec.value, rec.headers, expect=DeploymentWindow).payload
                        end = w.window_start.timestamp() + w.window_seconds
                        self.window_lags_s.append(rec.timestamp / 1000 - end)
                        if w.deployment_id == STABLE:
                            self.windows_seen.set()
        finally:
            await consumer.stop()

    def lag(self, last: int = 200) -> str:
        recent = self.window_lags_s[-last:]
        if not recent:
            return "no windows yet"
        return f"window end -> published: median {statistics.median(recent):.1f} s, max {max(recent):.1f} s"

    async def follow_rollouts(self) -> None:
        consumer = AIOKafkaConsumer(**aiokafka_consumer_kwargs(self.settings, None))
        await consumer.start()
        try:
            await assign_from_beginning(consumer, [ROLLOUTS.name])
            while not self.stop.is_set():
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    for rec in records:
                        ev: RolloutEvent = decode(rec.value, rec.headers, expect=RolloutEvent).payload
                        if ev.action in ("rollback", "promote") and ev.rollout_id not in self.verdicts:
                            self.verdicts[ev.rollout_id] = (ev, rec.timestamp)
                            self.verdict_arrived.set()
        finally:
            await consumer.stop()


def _spec(canary: str, pct: float) -> RolloutSpec:
    return RolloutSpec.model_validate({
        "alias": ALIAS, "stable": STABLE, "canary": canary, "steps": [pct, 100], "alpha": 0.01, "min_samples": 100,
        "min_step_seconds": 30, "max_step_seconds": 300, "report_seconds": 10,
        "gates": {
            "error_rate": {"max_ratio": 1.0, "margin": 0.03},
            "slow_request_rate": {"max_ratio": 1.25, "margin": 0.03},
            "safety_finding_rate": {"max_ratio": 1.0, "margin": 0.02},
            "drift_share": {"threshold": 0.5},
        },
    })


def _start(cmd: list[str], settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(cmd, env={**os.environ, **settings.to_env()}, stdout=out, stderr=subprocess.STDOUT)


def _wait_log(path: Path, text: str, proc: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while text not in (path.read_text(errors="replace") if path.exists() else ""):
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args} exited ({proc.returncode}); see {path}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{proc.args}: no {text!r} in {path} within {timeout_s}s")
        time.sleep(0.2)


async def _drive(settings: Settings, args: argparse.Namespace, canaries: list[tuple[str, str, Behaviour]],
                 ) -> tuple[list[Run], str]:
    loop = Loop(settings, args.rate)
    loop.producer = AIOKafkaProducer(**aiokafka_producer_kwargs(settings))
    await loop.producer.start()
    tasks = [asyncio.create_task(loop.replicas([STABLE] + [c for _, c, _ in canaries])),
             asyncio.create_task(loop.traffic()), asyncio.create_task(loop.follow_rollouts()),
             asyncio.create_task(loop.follow_windows())]
    out: list[Run] = []
    try:
        began = time.monotonic()
        await asyncio.wait_for(loop.windows_seen.wait(), args.startup_timeout_s)
        print(f"the stream worker's first window of {STABLE} after {time.monotonic() - began:.0f} s of traffic")
        print(f"warm-up: {args.warmup_s:.0f} s of stable alone (its latency before a rollout fixes the slow threshold)")
        await asyncio.sleep(args.warmup_s)
        print(f"  sent {loop.sent}, answered {loop.answered}; {loop.lag()}")
        for scenario, canary, behaviour in canaries:
            run = Run(scenario, canary, behaviour)
            loop.behaviours[canary] = behaviour
            loop.runs[canary] = run
            started = await start_rollout(settings, _spec(canary, args.canary_pct))
            run.rollout_id = started.rollout_id
            found = await loop.verdict_of(run.rollout_id, args.healthy_timeout_s if scenario == "healthy"
                                          else args.bad_timeout_s)
            if found is not None:
                run.verdict, run.verdict_ms = found
                if run.verdict.action == "rollback":
                    await asyncio.sleep(args.settle_s)  # dispatches still in flight show up here
            else:
                await abort_rollout(settings, ALIAS, reason="bench: no verdict in time")
                await asyncio.sleep(args.settle_s)
            out.append(run)
            took = (run.verdict_ms - run.first_dispatch_ms) / 1000 if run.verdict_ms and run.first_dispatch_ms else None
            print(f"  {scenario:<22} {canary:<12} -> {run.verdict.action if run.verdict else 'no verdict'}"
                  + (f" {took:.1f} s after the canary's first request" if took is not None else "")
                  + f"; {loop.lag()}")
            if run.verdict is not None and run.verdict.action == "promote":
                break  # the canary serves everything now; nothing to roll out after it
    finally:
        loop.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
        await loop.producer.stop()
    return out, loop.lag(last=100_000)


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"median {statistics.median(values):.1f} s, max {max(values):.1f} s, n={len(values)}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3, help="runs per bad scenario")
    parser.add_argument("--rate", type=float, default=50.0, help="requests per second to the alias")
    parser.add_argument("--canary-pct", type=float, default=10.0)
    parser.add_argument("--warmup-s", type=float, default=30.0)
    parser.add_argument("--bad-timeout-s", type=float, default=90.0)
    parser.add_argument("--healthy-timeout-s", type=float, default=300.0)
    parser.add_argument("--settle-s", type=float, default=5.0)
    parser.add_argument("--startup-timeout-s", type=float, default=300.0,
                        help="how long to wait for the stream worker's first window")
    parser.add_argument("--no-healthy", action="store_true")
    args = parser.parse_args()

    canaries: list[tuple[str, str, Behaviour]] = []
    for i in range(args.runs):
        canaries.append(("latency x3", f"chat-v2-l{i}", Behaviour(latency_median_ms=1200.0)))
    for i in range(args.runs):
        canaries.append(("PII in 30% of answers", f"chat-v2-p{i}", Behaviour(pii_rate=0.3)))
    if not args.no_healthy:
        canaries.append(("healthy", "chat-v2-h", Behaviour()))

    with tempfile.TemporaryDirectory(prefix="llmops-e2e-") as tmp:
        base = Path(tmp)
        settings = Settings(data_dir=base / "data", broker_port=free_port(), clickhouse_http_port=free_port(),
                            clickhouse_tcp_port=free_port(), clickhouse_database="llmops_bench")
        stack = LocalStack(settings)
        procs: list[subprocess.Popen[bytes]] = []
        began = time.monotonic()
        try:
            stack.up()
            ensure_topics(settings)
            ensure_topics(settings, [dispatch_topic(d) for d in [STABLE] + [c for _, c, _ in canaries]])
            migrate(settings)
            streams_cfg = base / "streams.json"
            streams_cfg.write_text(json.dumps({
                "window_seconds": 1, "window_grace_s": 1.0, "batch_interval_s": 0.2, "aggregate_interval_s": 0.5,
                "drift_reference_size": 100, "drift_current_size": 100, "drift_check_every": 50,
                "drift_check_interval_s": 10.0,
            }))
            logs = {name: base / f"{name}.log" for name in ("streams", "router", "judge")}
            procs.append(_start([sys.executable, "-m", "streams.worker", "--config", str(streams_cfg)], settings,
                                logs["streams"]))
            procs.append(_start([sys.executable, "-m", "services.cli.main", "router", "--route", f"{ALIAS}={STABLE}"],
                                settings, logs["router"]))
            judge = _start([sys.executable, "-m", "services.rollout.judge_app"], settings, logs["judge"])
            procs.append(judge)
            _wait_log(logs["judge"], "judge ready", judge, 120)
            print(f"stack, stream worker (1-second windows), router and judge up after {time.monotonic() - began:.0f} s; "
                  f"{args.rate:.0f} req/s, canary at {args.canary_pct:g}%")
            runs, loop_lag = asyncio.run(_drive(settings, args, canaries))
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
            stack.down()

    print(f"\npublication of windows over the whole run: {loop_lag}")
    print("\nscenario                 runs  outcome                 canary's first request -> verdict event   "
          "verdict -> router's last dispatch to the canary")
    for scenario in dict.fromkeys(r.scenario for r in runs):
        rs = [r for r in runs if r.scenario == scenario]
        outcomes = ", ".join(f"{a} {sum(1 for r in rs if (r.verdict.action if r.verdict else 'none') == a)}"
                             for a in dict.fromkeys(r.verdict.action if r.verdict else "none" for r in rs))
        detect = [(r.verdict_ms - r.first_dispatch_ms) / 1000 for r in rs if r.verdict_ms and r.first_dispatch_ms]
        stops = [max(0, (r.last_dispatch_ms or 0) - (r.verdict_ms or 0)) / 1000 for r in rs
                 if r.verdict is not None and r.verdict.action == "rollback"]
        print(f"{scenario:<24} {len(rs):>4}  {outcomes:<23} {_stats(detect):<41} {_stats(stops) if stops else '-'}")
    for r in runs:
        if r.verdict is not None:
            print(f"\n{r.scenario} ({r.canary}): {r.verdict.reason[:600]}")
    print(f"\nran in {time.monotonic() - began:.0f} s on a shared machine (indicative timings); stream worker: the one on "
          "this checkout (python -m streams.worker)")


if __name__ == "__main__":
    main()
