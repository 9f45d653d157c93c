"""What Kafka + Ray Serve add: request latency (p50/p99) through producer -> llm.dispatch.<dep> -> replica ->
llm.completions -> consumer, against calling the engine directly in-process on the same model and requests
(the baseline), and completions/s of a burst through 2 replicas against the direct engine.

    python bench/inference_path.py                 # SmolLM2-135M, local broker started here, local Ray
    python bench/inference_path.py --model DIR     # any HF model directory

Uses the running Kafka of LLMOPS_KAFKA_BOOTSTRAP if set; otherwise starts a throwaway local broker. Each replica
and the direct engine use ``--threads`` torch threads (default 1, so two replicas share the 2 cores fairly).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from schemas.codec import decode, make_event
from schemas.completions import Completion
from schemas.requests import GenerationParams, InferenceRequest, Message
from schemas.topics import COMPLETIONS, dispatch_topic
from services.core.kafka.admin import ensure_topics
from services.core.kafka.config import confluent_consumer_config
from services.core.kafka.producer import EventProducer
from services.core.settings import Settings
from services.inference.adapter import to_engine_request
from services.inference.engine import Engine, EngineLimits, EngineResult
from services.inference.model_loader import SMOLLM2_GGUF, load_model, smollm2_dir
from services.inference.spec import DeploymentSpec
from services.infra.broker import LocalBroker
from services.infra.process import free_port


def request(rid: str, dep: str, i: int, max_tokens: int) -> InferenceRequest:
    return InferenceRequest(
        request_id=rid, tenant="bench", application="bench", model_alias="bench", deployment_id=dep,
        messages=[Message(role="user", content=f"Give me fact number {i} about the ocean.")],
        params=GenerationParams(max_tokens=max_tokens, temperature=0.0),
    )


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


class CompletionWaiter:
    """Reads llm.completions from the beginning on a thread; ``wait(ids)`` returns when all have arrived."""

    def __init__(self, settings: Settings) -> None:
        self.consumer = Consumer(confluent_consumer_config(settings, f"bench-{uuid.uuid4().hex[:8]}",
                                                           **{"fetch.wait.max.ms": 5}))
        self.consumer.assign([TopicPartition(COMPLETIONS.name, p, OFFSET_BEGINNING)
                              for p in range(COMPLETIONS.partitions)])
        self.arrived: dict[str, tuple[float, Completion]] = {}
        self.cond = threading.Condition()
        self.stop = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop:
            for msg in self.consumer.consume(100, timeout=0.05):
                if msg.error():
                    continue
                c = decode(msg.value(), msg.headers(), expect=Completion).payload
                with self.cond:
                    self.arrived.setdefault(c.request_id, (time.perf_counter(), c))
                    self.cond.notify_all()

    def wait(self, ids: set[str], timeout_s: float) -> None:
        deadline = time.perf_counter() + timeout_s
        with self.cond:
            while not ids <= set(self.arrived):
                left = deadline - time.perf_counter()
                if left <= 0:
                    raise TimeoutError(f"{len(ids - set(self.arrived))} completions missing")
                self.cond.wait(left)

    def close(self) -> None:
        self.stop = True
        self.thread.join()
        self.consumer.close()


def direct(spec: DeploymentSpec, loaded, n: int, burst: int, max_tokens: int) -> tuple[list[float], float]:
    engine = Engine(loaded, EngineLimits(max_batch_size=spec.max_batch_size, token_budget=spec.token_budget))
    engine.start()
    try:
        lat = []
        for i in range(n + 2):
            done = threading.Event()
            t0 = time.perf_counter()
            job = to_engine_request(request(f"d{i}", spec.deployment_id, i, max_tokens), spec, loaded.tokenizer)
            assert isinstance(job, tuple)
            engine.submit(job[0], None, lambda r, d=done: d.set())
            done.wait()
            if i >= 2:  # first two are warm-up
                lat.append((time.perf_counter() - t0) * 1000)
        finished: list[EngineResult] = []
        all_done = threading.Event()

        def on_finish(r: EngineResult) -> None:
            finished.append(r)
            if len(finished) == burst:
                all_done.set()

        t0 = time.perf_counter()
        for i in range(burst):
            job = to_engine_request(request(f"b{i}", spec.deployment_id, i, max_tokens), spec, loaded.tokenizer)
            assert isinstance(job, tuple)
            engine.submit(job[0], None, on_finish)
        all_done.wait()
        return lat, burst / (time.perf_counter() - t0)
    finally:
        engine.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--gguf-file", default=None)
    ap.add_argument("--requests", type=int, default=30, help="sequential requests for latency")
    ap.add_argument("--burst", type=int, default=48, help="requests published at once for completions/s")
    ap.add_argument("--max-tokens", type=int, default=8)
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    source, gguf = (args.model, args.gguf_file) if args.model else (smollm2_dir(), SMOLLM2_GGUF)

    broker = None
    if os.environ.get("LLMOPS_KAFKA_BOOTSTRAP"):
        settings = Settings()
    else:
        settings = Settings(data_dir=Path(tempfile.mkdtemp(prefix="bench-inference-")), broker_port=free_port())
        broker = LocalBroker(settings)
        broker.start()
    dep = f"bench-{uuid.uuid4().hex[:6]}"
    spec = DeploymentSpec(deployment_id=dep, model_alias="bench", model_source=source, gguf_file=gguf,
                          num_replicas=args.replicas, max_batch_size=8, max_queued_requests=16,
                          torch_threads=args.threads, ray_actor_options={"num_cpus": 0.5})
    ensure_topics(settings)
    ensure_topics(settings, [dispatch_topic(dep)])

    torch.set_num_threads(args.threads)
    loaded = load_model(source, gguf_file=gguf)
    d_lat, d_rate = direct(spec, loaded, args.requests, args.burst, args.max_tokens)
    del loaded

    import ray

    from services.inference.serve_app import serve_deployment, stop_deployment

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    waiter = CompletionWaiter(settings)
    producer = EventProducer(settings, **{"linger.ms": 0})
    try:
        t0 = time.perf_counter()
        serve_deployment(spec, settings=settings)
        print(f"{args.replicas} replicas up in {time.perf_counter() - t0:.1f}s", flush=True)
        warm = [request(f"w{i}-{uuid.uuid4().hex[:6]}", dep, i, 2) for i in range(12)]
        for r in warm:
            producer.send(spec.dispatch_topic, make_event(r, source="bench", tenant_id="bench"), key=r.request_id)
        producer.flush()
        waiter.wait({r.request_id for r in warm}, 180)  # the group has settled and both replicas served
        time.sleep(2)

        k_lat = []
        for i in range(args.requests):
            r = request(f"k{i}-{uuid.uuid4().hex[:6]}", dep, i, args.max_tokens)
            t = time.perf_counter()
            producer.send(spec.dispatch_topic, make_event(r, source="bench", tenant_id="bench"), key=r.request_id)
            producer.flush()
            waiter.wait({r.request_id}, 60)
            k_lat.append((waiter.arrived[r.request_id][0] - t) * 1000)

        burst = [request(f"b{i}-{uuid.uuid4().hex[:6]}", dep, i, args.max_tokens) for i in range(args.burst)]
        t = time.perf_counter()
        for r in burst:
            producer.send(spec.dispatch_topic, make_event(r, source="bench", tenant_id="bench"), key=r.request_id)
        producer.flush()
        waiter.wait({r.request_id for r in burst}, 300)
        k_rate = args.burst / (max(waiter.arrived[r.request_id][0] for r in burst) - t)
        served = [waiter.arrived[r.request_id][1] for r in burst]
        assert all(c.error is None for c in served)
        stop_deployment(spec)
    finally:
        waiter.close()
        ray.shutdown()
        if broker is not None:
            broker.stop()

    d50, d99, k50, k99 = pct(d_lat, 0.5), pct(d_lat, 0.99), pct(k_lat, 0.5), pct(k_lat, 0.99)
    print()
    print(f"model {spec.reported_model_name}, max_tokens={args.max_tokens}, greedy, {args.threads} torch thread(s) "
          f"per engine; {args.requests} sequential requests, burst of {args.burst}")
    print(f"{'path':<44} {'p50 ms':>8} {'p99 ms':>8} {'completions/s':>14} {'ratio':>6}")
    print(f"{'direct engine call (baseline, 1 engine)':<44} {d50:>8.1f} {d99:>8.1f} {d_rate:>14.2f} {1.0:>5.2f}x")
    print(f"{f'Kafka -> {args.replicas} Serve replicas -> Kafka':<44} {k50:>8.1f} {k99:>8.1f} {k_rate:>14.2f} "
          f"{k_rate / d_rate:>5.2f}x")
    print(f"{'added by the Kafka path':<44} {k50 - d50:>8.1f} {k99 - d99:>8.1f}")
    print(f"mean replica-reported total_ms in the burst: {statistics.mean(c.total_ms for c in served):.0f}")


if __name__ == "__main__":
    main()
