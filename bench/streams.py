"""Benchmark of the stream worker (a Faust app): events/s against a bare loop and Faust's own floor; scale-out; latency.

One command: ``python bench/streams.py [--events 20000] [--probes 60]``. It starts its own broker and ClickHouse on
free ports (temporary directory), creates topics, applies migrations, and produces one backlog of mixed events
with realistic texts (per request: the request with a multi-sentence prompt, its completion with a paragraph of
answer, feedback for every other one; 1 in 5 prompts or answers carries personal data, so the scanners and
redaction have work). Then, in one run, each in its own consumer group over the same backlog:

1. bare: an aiokafka consumer reads the three topics and decodes every record with the codec (no Faust, no
   ClickHouse) -- the ceiling of this broker and client on this machine;
2. faust no-op: a Faust worker (``services.core.faust_runtime``: noack_take batches, acks after the guard) whose
   handler does nothing -- Faust's own per-message floor;
3. app: the stream worker (``python -m streams.worker``), one agent per input topic (the default layout);
4. app, single agent: the same with the three topics in one agent (``agent_layout: single``);
5. app x2: two worker processes of one group sharing the 6 partitions (started together, so they split the
   partitions from the first assignment);
6. latency, with the app of (3) running under background traffic (``--probe-rate`` events/s): probe completions
   produced one at a time (each for a deployment of its own, spread over the phases of a window); for each, the time
   from produce to its fragment on ``llm.deployment-windows`` and to its minute in ``agg_latency_minute``.

Rates are measured while the group's committed offsets go from 10% to 90% of the backlog (commits every 0.2 s),
which leaves out process start, group joins and rebalances, the scanners' model loading, and the tail. Everything
shares one machine (broker, ClickHouse, workers, producer); on a shared machine the numbers are noisy, the ratios
less so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aiokafka import AIOKafkaConsumer
from confluent_kafka import Consumer, TopicPartition

from schemas import Completion, DeploymentWindow, Feedback, InferenceRequest, Message, decode, make_event
from services.core.clickhouse.client import connect
from services.core.clickhouse.migrations import migrate
from services.core.kafka.config import aiokafka_consumer_kwargs, confluent_consumer_config
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.infra.process import free_port
from services.infra.stack import LocalStack
from streams.app import prepare
from streams.config import StreamsConfig

SENTENCES = [
    "The customer reports that the invoice for last month was charged twice to the same card.",
    "Our deployment pipeline failed after the dependency upgrade, and the logs mention a missing certificate.",
    "Please summarise the attached meeting notes and list the action items with their owners.",
    "I would like to change the delivery address for my order before it ships tomorrow morning.",
    "Explain the difference between a tumbling window and a sliding window in stream processing.",
    "The dashboard shows a latency spike every hour, roughly at the time the batch job starts.",
    "Can you draft a polite reply declining the invitation but proposing a call next week instead?",
    "Translate the following paragraph into plain English for a non-technical audience.",
    "Our quarterly report needs a short paragraph on churn, retention and the new pricing tiers.",
    "The model keeps answering in French even though the question was asked in English.",
]
ANSWERS = [
    "Thanks for reaching out. I checked the account and found two identical charges on the same day; one of them "
    "has been reversed and should appear on your statement within three to five business days.",
    "The failure comes from the new TLS library, which no longer trusts the intermediate certificate bundled with "
    "the base image. Updating the CA bundle in the image, or pinning the previous library version, fixes it.",
    "Here is a summary of the meeting: the team agreed to ship the beta on Friday, Maria owns the release notes, "
    "Tom follows up on the open security review, and the next sync is planned for Tuesday afternoon.",
    "A tumbling window splits the stream into fixed, non-overlapping intervals, so every event belongs to exactly "
    "one window; a sliding window advances by a smaller step than its length, so windows overlap.",
    "Churn fell to 3.1 percent this quarter while retention of annual plans rose; the new pricing tiers moved about "
    "a fifth of monthly customers to the annual plan, which explains most of the improvement.",
]
REFS = ["ticket", "order", "case", "invoice", "incident"]
PII = [" You can reach me at jane.doe@example.com.", " Call me back on +1 415 555 0100 after six.",
       " My card number is 4111 1111 1111 1111."]


def _text(rng: random.Random, parts: list[str], n: int, pii: bool, i: int) -> str:
    """A few sentences, made unique by a reference number (real prompts and answers rarely repeat)."""
    text = " ".join(rng.choice(parts) for _ in range(n)) + f" Reference {rng.choice(REFS)}-{i}."
    return text + (rng.choice(PII) if pii else "")


def produce_backlog(settings: Settings, config: StreamsConfig, requests: int) -> int:
    rng = random.Random(7)
    producer = EventProducer(settings, **{"linger.ms": 20})
    sent = 0
    for i in range(requests):
        rid = f"bench-{i}"
        tenant = f"tenant-{i % 5}"
        deployment = f"dep-{i % 4}"
        prompt = _text(rng, SENTENCES, rng.randint(2, 5), pii=i % 5 == 0, i=i)
        answer = _text(rng, ANSWERS, rng.randint(1, 3), pii=i % 5 == 1, i=i)
        producer.send(config.requests_topic, make_event(InferenceRequest(
            request_id=rid, tenant=tenant, application="bench", model_alias="chat", deployment_id=deployment,
            messages=[Message(role="user", content=prompt)]), source="bench", tenant_id=tenant), key=rid)
        producer.send(config.completions_topic, make_event(Completion(
            request_id=rid, tenant=tenant, model_alias="chat", deployment_id=deployment, model_name="gpt-4o-mini",
            prompt_version="1", prompt_text=prompt, text=answer, finish_reason="stop", prompt_tokens=40 + i % 50,
            completion_tokens=20 + i % 300, ttft_ms=20.0 + i % 40, total_ms=200.0 + i % 900, routing_weight=0.5),
            source="bench", tenant_id=tenant), key=rid)
        sent += 2
        if i % 2 == 0:
            producer.send(config.feedback_topic, make_event(Feedback(request_id=rid, score=(i % 10) / 10),
                                                            source="bench", tenant_id=tenant), key=rid)
            sent += 1
    producer.flush(120)
    return sent


async def bare_loop(settings: Settings, config: StreamsConfig, n: int) -> float:
    topics = [config.requests_topic, config.completions_topic, config.feedback_topic]
    consumer = AIOKafkaConsumer(*topics, **aiokafka_consumer_kwargs(settings, f"{config.group_id}-bare"))
    await consumer.start()
    got, t0 = 0, None
    try:
        while got < n:
            batches = await consumer.getmany(timeout_ms=1000, max_records=config.batch_size)
            if batches and t0 is None:
                t0 = time.perf_counter()
            for records in batches.values():
                for r in records:
                    decode(r.value, list(r.headers or []))
                    got += 1
        return n / (time.perf_counter() - (t0 or time.perf_counter()))
    finally:
        await consumer.stop()


class Workers:
    """Worker processes of one group, and the rate at which they commit the backlog."""

    def __init__(self, settings: Settings, config: StreamsConfig, tmp: Path, count: int = 1, noop: bool = False) -> None:
        self.settings = settings
        self.config = config
        cfg_file = tmp / f"{config.group_id}.json"
        cfg_file.write_text(config.model_dump_json())
        cmd = ([sys.executable, __file__, "--noop-worker", str(cfg_file)] if noop
               else [sys.executable, "-m", "streams.worker", "--config", str(cfg_file), "--log-level", "WARNING"])
        env = {**os.environ, **settings.to_env(), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
        self.procs = []
        for i in range(count):
            log = (tmp / f"{config.group_id}-{i}.log").open("ab")
            self.procs.append(subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT))

    def rate(self, n: int, timeout_s: float = 900) -> float:
        """Events/s while the group's committed offsets went from 10% to 90% of the backlog (the steady part: start-up
        -- group joins and rebalances, loading the scanners' model -- and the tail are left out)."""
        topics = [self.config.requests_topic, self.config.completions_topic, self.config.feedback_topic]
        consumer = Consumer(confluent_consumer_config(self.settings, self.config.group_id))
        tps = [TopicPartition(t, p) for t in topics for p in range(6)]
        try:
            t0 = c0 = None
            deadline = time.monotonic() + timeout_s
            while time.monotonic() < deadline:
                done = sum(tp.offset for tp in consumer.committed(tps, timeout=10) if tp.offset >= 0)
                now = time.perf_counter()
                if done >= 0.1 * n and t0 is None:
                    t0, c0 = now, done
                if done >= 0.9 * n and t0 is not None and now > t0:
                    return (done - (c0 or 0)) / (now - t0)
                if any(p.poll() is not None for p in self.procs):
                    raise RuntimeError(f"a worker of {self.config.group_id} exited")
                time.sleep(0.05)
            raise TimeoutError(f"{self.config.group_id}: not done within {timeout_s}s")
        finally:
            consumer.close()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                p.kill()


def probe_latency(settings: Settings, config: StreamsConfig, probes: int, rate: float) -> tuple[list[float], list[float]]:
    """(produce -> window published, produce -> minute visible) per probe, with background traffic at ``rate``/s."""
    stop = threading.Event()

    def background() -> None:
        producer = EventProducer(settings)
        i = 0
        while not stop.is_set():
            rid = f"bg-{i}"
            producer.send(config.completions_topic, make_event(Completion(
                request_id=rid, tenant="bg", model_alias="chat", deployment_id=f"dep-{i % 4}", model_name="gpt-4o-mini",
                text=ANSWERS[i % len(ANSWERS)], finish_reason="stop", prompt_tokens=5, completion_tokens=50,
                total_ms=300.0), source="bench", tenant_id="bg"), key=rid)
            i += 1
            if i % 10 == 0:
                producer.flush()
                time.sleep(10 / rate)
        producer.flush()

    windows = Consumer(confluent_consumer_config(settings, f"bench-probe-{os.urandom(4).hex()}"))
    if rate <= 0:
        stop.set()
    windows.subscribe([config.windows_topic])
    windows.consume(1000, 2.0)  # join and skip ahead through what is there
    client = connect(settings)
    producer = EventProducer(settings, **{"linger.ms": 0})
    thread = threading.Thread(target=background, daemon=True)
    thread.start()
    to_window, to_minute = [], []
    rng = random.Random(11)
    try:
        for _ in range(probes):
            dep = f"probe-{os.urandom(4).hex()}"
            producer.send(config.completions_topic, make_event(Completion(
                request_id=dep, tenant="probe", model_alias=dep, deployment_id=dep, model_name="gpt-4o-mini",
                text="ok", finish_reason="stop", prompt_tokens=5, completion_tokens=2, total_ms=10.0), source="bench",
                tenant_id="probe"), key=dep)
            producer.flush()
            sent = time.perf_counter()
            window_at = minute_at = None
            next_query = sent
            while window_at is None or minute_at is None:
                for m in windows.consume(100, 0.01):
                    if (m.error() is None and window_at is None and dep.encode() in m.value()
                            and decode(m.value(), expect=DeploymentWindow).payload.deployment_id == dep):
                        window_at = time.perf_counter()
                if minute_at is None and time.perf_counter() >= next_query:
                    next_query = time.perf_counter() + 0.05
                    if client.query("SELECT count() FROM agg_latency_minute WHERE deployment_id = {d:String}",
                                    parameters={"d": dep}).result_rows[0][0]:
                        minute_at = time.perf_counter()
                if time.perf_counter() - sent > 30:
                    raise TimeoutError(f"probe {dep} not seen within 30s")
            to_window.append(window_at - sent)
            to_minute.append(minute_at - sent)
            time.sleep(rng.uniform(0.05, 0.6))  # land at another phase of the window next time
    finally:
        stop.set()
        thread.join(10)
        windows.close()
    return to_window, to_minute


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * (len(ordered) - 1) + 0.5))]


def noop_worker(config_file: str) -> None:
    """Child process: a Faust worker with the guard rails whose batch handler does nothing."""
    import faust

    from services.core.faust_runtime import BatchGuard, Record, batch_agent, make_app
    from services.core.settings import get_settings

    config = StreamsConfig.load(config_file)
    app = make_app(config.group_id, get_settings(), commit_interval_s=config.commit_interval_s)

    async def nothing(records: list[Record]) -> None:
        return None

    async def poison(record: Record, exc: BaseException) -> None:
        return None

    batch_agent(app, [config.requests_topic, config.completions_topic, config.feedback_topic],
                BatchGuard("noop", nothing, poison), batch_size=config.batch_size, within_s=config.batch_interval_s)
    faust.Worker(app, loglevel="WARNING", redirect_stdouts=False).execute_from_commandline()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=20_000, help="approximate backlog size (requests x 2.5)")
    parser.add_argument("--probes", type=int, default=60)
    parser.add_argument("--probe-rate", type=float, default=200.0, help="background completions/s during the probes")
    parser.add_argument("--latency-only", action="store_true", help="skip the throughput runs (a small backlog only)")
    parser.add_argument("--no-drift", action="store_true", help="run the stream app with drift checks off")
    parser.add_argument("--noop-worker", metavar="CONFIG", help=argparse.SUPPRESS)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the stack on the way out
    if args.noop_worker:
        noop_worker(args.noop_worker)
        return

    tmp = Path(tempfile.mkdtemp(prefix="llmops-bench-streams-"))
    settings = Settings(data_dir=tmp, broker_port=free_port(), clickhouse_http_port=free_port(),
                        clickhouse_tcp_port=free_port(), clickhouse_database="bench")
    stack = LocalStack(settings)
    stack.up()
    try:
        run = os.urandom(4).hex()
        base = StreamsConfig(
            group_id=f"bench-{run}", requests_topic=f"bench.{run}.requests", completions_topic=f"bench.{run}.completions",
            feedback_topic=f"bench.{run}.feedback", safety_topic=f"bench.{run}.safety",
            alerts_topic=f"bench.{run}.alerts", deadletter_topic=f"bench.{run}.deadletter",
            windows_topic=f"bench.{run}.windows", policies_path=None, budgets_path=None, commit_interval_s=0.2,
            drift_enabled=not args.no_drift,
        )
        prepare(settings, base)
        migrate(settings)
        t = time.perf_counter()
        n = produce_backlog(settings, base, 40 if args.latency_only else int(args.events / 2.5))
        print(f"== backlog: {n:,} events (requests, completions, feedback) produced in {time.perf_counter() - t:.1f}s",
              flush=True)

        rates: dict[str, float] = {"bare aiokafka consume + decode": asyncio.run(bare_loop(settings, base, n))}
        print(f"   bare: {rates['bare aiokafka consume + decode']:,.0f}/s", flush=True)

        def measure(label: str, count: int = 1, noop: bool = False, keep: bool = False, **overrides: object
                    ) -> Workers:
            config = base.model_copy(update={"group_id": f"{base.group_id}-{len(rates)}", **overrides})
            workers = Workers(settings, config, tmp, count=count, noop=noop)
            try:
                rates[label] = workers.rate(n)
            finally:
                if not keep:
                    workers.stop()
            print(f"   {label}: {rates[label]:,.0f}/s", flush=True)
            return workers

        if not args.latency_only:
            measure("faust no-op agent (noack_take, guard, acks)", noop=True)
        app = measure("stream app (agent per topic)", keep=True)
        try:
            to_window, to_minute = probe_latency(settings, app.config, args.probes, args.probe_rate)
        finally:
            app.stop()
        if not args.latency_only:
            measure("stream app (one agent, three topics)", agent_layout="single")
            measure("stream app, 2 worker processes", count=2)

        bare = rates["bare aiokafka consume + decode"]
        floor = rates.get("faust no-op agent (noack_take, guard, acks)", float("nan"))
        one = rates["stream app (agent per topic)"]
        print(f"\n== {n:,} events, 6 partitions per topic, local broker + ClickHouse, one machine ({os.cpu_count()} CPUs); "
              f"batch {base.batch_size} / {base.batch_interval_s}s, drift {'on' if base.drift_enabled else 'off'}")
        print(f"   {'pipeline':<46} {'events/s':>10} {'vs bare':>8} {'vs faust':>9} {'vs app':>7}")
        for label, rate in rates.items():
            print(f"   {label:<46} {rate:>10,.0f} {rate / bare:>7.2f}x {rate / floor:>8.2f}x {rate / one:>6.2f}x")
        print(f"\n== latency with {args.probe_rate:.0f} completions/s of background traffic ({len(to_window)} probes)")
        print(f"   produce -> window on {base.windows_topic.split('.')[-1]} topic: p50 {pct(to_window, 0.5):.2f}s  "
              f"p99 {pct(to_window, 0.99):.2f}s  max {max(to_window):.2f}s  (window {base.window_seconds}s, "
              f"grace {base.window_grace_s}s)")
        print(f"   produce -> minute in agg_latency_minute:  p50 {pct(to_minute, 0.5):.2f}s  "
              f"p99 {pct(to_minute, 0.99):.2f}s  max {max(to_minute):.2f}s  (recomputed every "
              f"{base.aggregate_interval_s}s)")
    finally:
        stack.down()


if __name__ == "__main__":
    main()
