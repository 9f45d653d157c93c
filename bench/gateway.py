"""What the gateway adds: HTTP -> gateway -> Kafka -> router -> replica -> reply topic -> gateway -> HTTP, against
the baseline of publishing to Kafka directly and awaiting the reply in one process (the SDK), on the same path.

    python bench/gateway.py                  # a throwaway local stack; 2,000 requests per mode at 100 concurrent
    python bench/gateway.py --requests 5000 --concurrency 100

Three processes besides the broker and ClickHouse: the backend (the real router and a fake replica that
answers at once, stamping the wall time it sent its first chunk into the text), one gateway process
(auth off, so no key lookup), and this load process (the SDK baseline, then aiohttp against the gateway: httpx's pool
managed only ~50 req/s at 100 connections here, so it would measure itself).
Reports latency p50/p99 and req/s of both at the given concurrency, the added latency, the SSE time to first
byte after the first chunk was produced (and what the gateway adds to the SDK's time to its first chunk),
the cache-hit latency (sequential), and the gateway process's CPU time per request (what bounds its req/s on a
machine whose cores it does not share). The machine is shared by other work while it runs: numbers are
indicative; rerun it on a quiet machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp
import psutil

from schemas.requests import InferenceRequest, Message
from services.client.client import Client, ClientConfig
from services.core.clickhouse.migrations import migrate
from services.core.kafka.admin import ensure_topics
from services.core.settings import Settings
from services.gateway.config import GatewayConfig, ModelEntry
from services.gateway.server import GatewayServer
from services.infra.process import free_port
from services.infra.stack import LocalStack
from tests.client.fake_replica import Answer
from tests.client.stack import serving


def stamped(request: InferenceRequest) -> Answer:
    """Answer at once; the first word is the wall time the answer was produced (the first chunk's send time)."""
    return Answer(text=f"{time.time():.6f} the quick brown fox jumps over the lazy dog")


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


def run_backend(settings: Settings, unique: str, ready: Any, stop: Any) -> None:
    async def go() -> None:
        async with serving(settings, unique, {"chat": f"dep-{unique}"}, {f"dep-{unique}": stamped}):
            ready.set()
            await asyncio.to_thread(stop.wait)

    asyncio.run(go())


def run_gateway(settings: Settings, config: GatewayConfig, port_out: Any, stop: Any, uvloop: bool = False) -> None:
    if uvloop:
        import uvloop as _uvloop

        asyncio.set_event_loop_policy(_uvloop.EventLoopPolicy())

    async def go() -> None:
        server = GatewayServer(settings, config)
        task = asyncio.create_task(server.serve())
        while not server.started:  # noqa: ASYNC110 - uvicorn offers no event for it
            await asyncio.sleep(0.05)
        port_out.value = server.port
        await asyncio.to_thread(stop.wait)
        server.stop()
        await task

    asyncio.run(go())


async def load(concurrency: int, total: int, one: Any) -> tuple[list[float], float]:
    """Latencies (ms) of ``total`` calls at ``concurrency``, and the calls per second."""
    latencies: list[float] = []
    queue = iter(range(total))

    async def worker() -> None:
        for i in queue:
            t0 = time.perf_counter()
            await one(i)
            latencies.append((time.perf_counter() - t0) * 1000)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, total / (time.perf_counter() - t0)


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


async def bench(settings: Settings, unique: str, port: int, args: argparse.Namespace, gateway_pid: int) -> dict[str, Any]:
    config = ClientConfig(requests_topic=f"t-{unique}.requests", completions_topic=f"t-{unique}.completions")
    results: dict[str, Any] = {}
    base = f"http://127.0.0.1:{port}/v1"
    async with Client(settings, tenant="bench", application="bench", config=config) as sdk, \
            aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=args.concurrency)) as http:

        async def direct(i: int) -> None:
            done = await sdk.complete("chat", messages=[Message(role="user", content=f"q {i} {uuid.uuid4().hex}")])
            assert done.text

        async def through_gateway(i: int) -> None:
            async with http.post(f"{base}/chat/completions", json={
                    "model": "chat", "messages": [{"role": "user", "content": f"q {i} {uuid.uuid4().hex}"}]}) as r:
                assert r.status == 200, await r.text()
                await r.read()

        for name, one in (("direct", direct), ("gateway", through_gateway)):
            await load(args.concurrency, args.warmup, one)
            cpu_before = cpu_seconds(gateway_pid)
            latencies, rate = await load(args.concurrency, args.requests, one)
            results[name] = {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "rps": rate,
                             "gateway_cpu_ms": (cpu_seconds(gateway_pid) - cpu_before) * 1000 / args.requests}
            latencies, rate = await load(1, args.sequential, one)
            results[f"{name}_seq"] = {"p50": pct(latencies, 0.5), "p99": pct(latencies, 0.99), "rps": rate}

        # streaming: time from the first chunk's production (stamped in its text) to its arrival
        sdk_first: list[float] = []
        for i in range(args.stream_requests):
            async with sdk.stream("chat", messages=[Message(role="user", content=f"s {i} {uuid.uuid4().hex}")]) as s:
                async for piece in s:
                    sdk_first.append((time.time() - float(piece.text.split()[0])) * 1000)
                    break
                async for _ in s:
                    pass
        sse_first: list[float] = []
        for i in range(args.stream_requests):
            body = {"model": "chat", "stream": True, "messages": [{"role": "user", "content": f"s {i} {uuid.uuid4().hex}"}]}
            async with http.post(f"{base}/chat/completions", json=body) as r:
                first_seen = False
                async for raw_line in r.content:
                    line = raw_line.decode()
                    if not first_seen and line.startswith("data: {"):
                        now = time.time()
                        text = json.loads(line[6:])["choices"][0]["delta"]["content"]
                        sse_first.append((now - float(text.split()[0])) * 1000)
                        first_seen = True
        results["stream"] = {"sdk_first_chunk_p50": pct(sdk_first, 0.5), "sdk_first_chunk_p99": pct(sdk_first, 0.99),
                             "sse_first_byte_p50": pct(sse_first, 0.5), "sse_first_byte_p99": pct(sse_first, 0.99)}

        # cache hits, one at a time
        cached = {"model": "chat", "temperature": 0, "messages": [{"role": "user", "content": f"cached {unique}"}]}
        async with http.post(f"{base}/chat/completions", json=cached) as first:
            assert first.headers["x-llmops-cache"] == "miss", first.headers
            await first.read()
        hits: list[float] = []
        for _ in range(args.cache_requests):
            t0 = time.perf_counter()
            async with http.post(f"{base}/chat/completions", json=cached) as r:
                await r.read()
            hits.append((time.perf_counter() - t0) * 1000)
            assert r.headers["x-llmops-cache"] == "hit"
        results["cache"] = {"p50": pct(hits, 0.5), "p99": pct(hits, 0.99)}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sequential", type=int, default=200, help="Requests per mode one at a time (added latency alone).")
    parser.add_argument("--stream-requests", type=int, default=200)
    parser.add_argument("--cache-requests", type=int, default=500)
    parser.add_argument("--uvloop", action="store_true", help="Run the gateway process on uvloop.")
    args = parser.parse_args()

    unique = uuid.uuid4().hex[:8]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), broker_port=free_port(), clickhouse_http_port=free_port(),
                            clickhouse_tcp_port=free_port(), clickhouse_database="llmops_bench")
        stack = LocalStack(settings)
        stack.up()
        ctx = multiprocessing.get_context("spawn")
        stop, ready, port = ctx.Event(), ctx.Event(), ctx.Value("i", 0)
        procs = []
        try:
            ensure_topics(settings)
            migrate(settings)
            procs.append(ctx.Process(target=run_backend, args=(settings, unique, ready, stop)))
            procs[-1].start()
            if not ready.wait(120):
                raise SystemExit("the backend did not start")
            gateway_config = GatewayConfig(
                port=0, instance_id=f"gw-bench-{unique}", models={"chat": ModelEntry()}, require_auth=False,
                requests_topic=f"t-{unique}.requests", completions_topic=f"t-{unique}.completions",
            )
            procs.append(ctx.Process(target=run_gateway, args=(settings, gateway_config, port, stop, args.uvloop)))
            procs[-1].start()
            deadline = time.monotonic() + 120
            while port.value == 0 and time.monotonic() < deadline:
                time.sleep(0.1)
            results = asyncio.run(bench(settings, unique, port.value, args, procs[-1].pid))
        finally:
            stop.set()
            for p in procs:
                p.join(60)
            stack.down()

    d, g, s, c = results["direct"], results["gateway"], results["stream"], results["cache"]
    print(f"gateway bench: {args.requests} requests per mode at {args.concurrency} concurrent "
          "(fake replica answering at once; shared 2-core machine: indicative)")
    print(f"{'path':<34} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
    print(f"{'direct: SDK over Kafka (baseline)':<34} {d['p50']:>8.1f} {d['p99']:>8.1f} {d['rps']:>8.0f}")
    print(f"{'through the gateway (HTTP)':<34} {g['p50']:>8.1f} {g['p99']:>8.1f} {g['rps']:>8.0f}")
    print(f"{'added by the gateway':<34} {g['p50'] - d['p50']:>+8.1f} {g['p99'] - d['p99']:>+8.1f} "
          f"{g['rps'] / d['rps']:>7.2f}x")
    print(f"gateway process CPU per request at {args.concurrency} concurrent: {g['gateway_cpu_ms']:.2f} ms "
          f"(idle polling while the direct mode ran: {d['gateway_cpu_ms']:.2f} ms per direct request); "
          f"one core would serve about {1000 / max(g['gateway_cpu_ms'] - d['gateway_cpu_ms'], 1e-3):.0f} req/s")
    ds, gs = results["direct_seq"], results["gateway_seq"]
    print(f"{'one at a time: direct':<34} {ds['p50']:>8.1f} {ds['p99']:>8.1f} {ds['rps']:>8.0f}")
    print(f"{'one at a time: through the gateway':<34} {gs['p50']:>8.1f} {gs['p99']:>8.1f} {gs['rps']:>8.0f}")
    print(f"{'one at a time: added':<34} {gs['p50'] - ds['p50']:>+8.1f} {gs['p99'] - ds['p99']:>+8.1f}")
    print(f"streaming, first chunk produced -> SDK has it:     p50 {s['sdk_first_chunk_p50']:.1f} ms, "
          f"p99 {s['sdk_first_chunk_p99']:.1f} ms")
    print(f"streaming, first chunk produced -> SSE first byte: p50 {s['sse_first_byte_p50']:.1f} ms, "
          f"p99 {s['sse_first_byte_p99']:.1f} ms (gateway adds {s['sse_first_byte_p50'] - s['sdk_first_chunk_p50']:+.1f} ms p50)")
    print(f"cache hit (sequential): p50 {c['p50']:.2f} ms, p99 {c['p99']:.2f} ms")


if __name__ == "__main__":
    main()
