"""Prometheus metrics of every long-running service: one catalog of names, one registry per process, one server.

Every metric a service exposes is declared here, once, so the names the dashboards query cannot drift from the
names the services publish. Names follow the OpenTelemetry GenAI semantic conventions in Prometheus form
(``gen_ai.client.operation.duration`` in seconds becomes ``gen_ai_client_operation_duration_seconds``, attribute
``gen_ai.request.model`` becomes label ``gen_ai_request_model``), with vLLM's names where the conventions have
none (``vllm:num_requests_running``, ``vllm:kv_cache_usage_perc``, ...), and ``llmops_`` names for the
platform's own machinery (stream worker, ClickHouse writer, router, judge, notifier).

Who records what:

- the stream worker, from every completion event: ``gen_ai_client_operation_duration_seconds`` and
  ``gen_ai_client_token_usage`` (the platform's view of each request, by tenant, model, deployment and finish
  reason), plus its own consumer, dead-letter, ClickHouse and safety metrics;
- the inference replicas (through Ray Serve's metrics API, :class:`ReplicaMetrics`): ``gen_ai_server_*`` and ``vllm:*``;
- the gateway: ``http_server_request_duration_seconds`` (:class:`HttpServerMetrics`) and its cache lookups;
- the shared consumer runtime (router, notifier, replicas), router, judge, notifier: their ``llmops_*`` families.

Label cardinality is bounded: labels whose values come from traffic (tenant, model, alias, deployment, ...)
keep at most ``metrics_max_label_values`` distinct values per label name in a process; later values are
reported as ``other``. No label ever carries a request id.

Usage::

    from services.core import metrics
    metrics.EVENTS_PROCESSED.labels(service="streams", topic="llm.completions").inc(len(batch))
    server = metrics.start_metrics_server(settings)  # None unless LLMOPS_METRICS_PORT is set
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal
from wsgiref.simple_server import WSGIServer

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    start_http_server,
)

if TYPE_CHECKING:
    from schemas.completions import Completion
    from schemas.rollouts import RolloutEvent
    from services.core.settings import Settings

log = logging.getLogger(__name__)

Kind = Literal["counter", "gauge", "histogram"]

OTHER = "other"
"""The label value reported once a label has seen ``max_label_values`` distinct values."""

DEFAULT_MAX_LABEL_VALUES = 100

# Bucket boundaries advised by the GenAI semantic conventions.
DURATION_BUCKETS = (0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92)
TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216, 67108864)
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
TPOT_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5)
# Platform latencies: ClickHouse inserts, routing, deliveries.
SHORT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# Labels whose values come from traffic and are therefore bounded per process.
OPEN_LABELS = frozenset({
    "tenant", "gen_ai_request_model", "gen_ai_response_model", "model_name", "deployment", "alias", "topic",
    "application", "prompt_version", "table",
})


@dataclass(frozen=True)
class MetricSpec:
    """One metric family: its Prometheus name, kind, help text, label names and (histograms) buckets."""

    name: str
    kind: Kind
    documentation: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] | None = None

    @property
    def exposed_name(self) -> str:
        """The name as scraped: counters gain ``_total`` (histograms expose ``_bucket``/``_sum``/``_count``)."""
        return self.name + "_total" if self.kind == "counter" else self.name


class LabelBound:
    """Keeps at most ``limit`` distinct values per open label name; later values become :data:`OTHER`."""

    def __init__(self, limit: int = DEFAULT_MAX_LABEL_VALUES) -> None:
        self.limit = limit
        self._seen: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def value(self, label: str, value: str) -> str:
        if label not in OPEN_LABELS:
            return value
        with self._lock:
            seen = self._seen.setdefault(label, set())
            if value in seen:
                return value
            if len(seen) >= self.limit:
                return OTHER
            seen.add(value)
            return value


REGISTRY = CollectorRegistry()
"""This process's registry: the catalog below plus process, platform and garbage-collector metrics."""
for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
    REGISTRY.register(_collector)

LABEL_BOUND = LabelBound()


class Family:
    """A declared metric in this process's registry; ``labels(...)`` bounds open label values."""

    def __init__(self, spec: MetricSpec, registry: CollectorRegistry = REGISTRY, bound: LabelBound = LABEL_BOUND) -> None:
        self.spec = spec
        self._bound = bound
        self._metric: Counter | Gauge | Histogram
        if spec.kind == "counter":
            self._metric = Counter(spec.name, spec.documentation, spec.labels, registry=registry)
        elif spec.kind == "gauge":
            self._metric = Gauge(spec.name, spec.documentation, spec.labels, registry=registry)
        else:
            self._metric = Histogram(
                spec.name, spec.documentation, spec.labels, registry=registry,
                buckets=spec.buckets or Histogram.DEFAULT_BUCKETS,
            )

    def labels(self, **values: str) -> Any:
        """The child for these label values (all of the family's labels, no others)."""
        if set(values) != set(self.spec.labels):
            raise ValueError(f"{self.spec.name} takes labels {self.spec.labels}, got {tuple(values)}")
        return self._metric.labels(**{k: self._bound.value(k, str(v)) for k, v in values.items()})

    def remove(self, **values: str) -> None:
        """Forget one child (e.g. the weight of a deployment that left its rollout)."""
        with contextlib.suppress(KeyError):
            self._metric.remove(*(self._bound.value(k, str(values[k])) for k in self.spec.labels))


CATALOG: dict[str, MetricSpec] = {}


def _declare(spec: MetricSpec) -> MetricSpec:
    if spec.name in CATALOG:
        raise ValueError(f"metric {spec.name} declared twice")
    CATALOG[spec.name] = spec
    return spec


def _family(spec: MetricSpec) -> Family:
    return Family(_declare(spec))


# --- GenAI semantic conventions: the platform's view of each request (recorded by the stream worker) ---------------

_CLIENT_LABELS = (
    "gen_ai_operation_name", "gen_ai_request_model", "gen_ai_response_model", "deployment", "tenant",
)
OPERATION_DURATION = _family(MetricSpec(
    "gen_ai_client_operation_duration_seconds", "histogram",
    "GenAI operation duration: from the request's publication to its completion (gen_ai.client.operation.duration).",
    (*_CLIENT_LABELS, "finish_reason", "error_type"), DURATION_BUCKETS,
))
TOKEN_USAGE = _family(MetricSpec(
    "gen_ai_client_token_usage", "histogram",
    "Tokens used per operation, by gen_ai_token_type input or output (gen_ai.client.token.usage).",
    (*_CLIENT_LABELS, "gen_ai_token_type"), TOKEN_BUCKETS,
))

# --- GenAI semantic conventions, server side (recorded by the inference replicas through Ray Serve) ----------------

_SERVER_LABELS = ("gen_ai_operation_name", "gen_ai_request_model", "gen_ai_response_model", "deployment")
SERVER_REQUEST_DURATION = _declare(MetricSpec(
    "gen_ai_server_request_duration_seconds", "histogram",
    "Time a replica spent on a request, queueing included (gen_ai.server.request.duration).",
    (*_SERVER_LABELS, "finish_reason", "error_type"), DURATION_BUCKETS,
))
SERVER_TIME_TO_FIRST_TOKEN = _declare(MetricSpec(
    "gen_ai_server_time_to_first_token_seconds", "histogram",
    "Time to generate the first token, queueing and prefill included (gen_ai.server.time_to_first_token).",
    _SERVER_LABELS, TTFT_BUCKETS,
))
SERVER_TIME_PER_OUTPUT_TOKEN = _declare(MetricSpec(
    "gen_ai_server_time_per_output_token_seconds", "histogram",
    "Time per output token after the first (gen_ai.server.time_per_output_token).",
    _SERVER_LABELS, TPOT_BUCKETS,
))

# --- vLLM names where the conventions have none (recorded by the inference replicas) --------------------------------

_ENGINE_LABELS = ("model_name", "deployment")
REQUESTS_RUNNING = _declare(MetricSpec(
    "vllm:num_requests_running", "gauge", "Requests in the engine's running batch.", _ENGINE_LABELS,
))
REQUESTS_WAITING = _declare(MetricSpec(
    "vllm:num_requests_waiting", "gauge", "Requests admitted to the replica and waiting for the engine.", _ENGINE_LABELS,
))
KV_CACHE_USAGE = _declare(MetricSpec(
    "vllm:kv_cache_usage_perc", "gauge", "Fraction of the KV-cache token budget in use (1 = full).", _ENGINE_LABELS,
))
PREFIX_CACHE_QUERIES = _declare(MetricSpec(
    "vllm:prefix_cache_queries", "counter", "Prompt tokens of finished requests (looked up in the prefix cache).",
    _ENGINE_LABELS,
))
PREFIX_CACHE_HITS = _declare(MetricSpec(
    "vllm:prefix_cache_hits", "counter", "Prompt tokens whose KV cache was reused from the prefix cache.",
    _ENGINE_LABELS,
))

SERVER_SPECS: tuple[MetricSpec, ...] = (
    SERVER_REQUEST_DURATION, SERVER_TIME_TO_FIRST_TOKEN, SERVER_TIME_PER_OUTPUT_TOKEN,
    REQUESTS_RUNNING, REQUESTS_WAITING, KV_CACHE_USAGE, PREFIX_CACHE_QUERIES, PREFIX_CACHE_HITS,
)
"""What the replicas record through Ray Serve (see :func:`ray_metric`)."""

# --- Consumers: stream worker, judge, router, notifier -------------------------------------------------------------

EVENTS_PROCESSED = _family(MetricSpec(
    "llmops_events_processed", "counter",
    "Kafka records a service finished with (committed-to-be), per topic; service is the consumer group.",
    ("service", "topic"),
))
CONSUMER_LAG = _family(MetricSpec(
    "llmops_consumer_lag", "gauge",
    "Records behind the partition's high-water mark, per consumer group topic and partition.",
    ("service", "topic", "partition"),
))
DEAD_LETTERS = _family(MetricSpec(
    "llmops_dead_letters", "counter", "Records sent to the dead-letter topic, by source topic and reason kind.",
    ("service", "topic", "reason"),
))
CLICKHOUSE_INSERT_DURATION = _family(MetricSpec(
    "llmops_clickhouse_insert_duration_seconds", "histogram",
    "Time of one successful ClickHouse insert, retries included.", ("table",), SHORT_BUCKETS,
))
CLICKHOUSE_INSERT_RETRIES = _family(MetricSpec(
    "llmops_clickhouse_insert_retries", "counter", "ClickHouse insert attempts that failed and were retried.", ("table",),
))
CLICKHOUSE_ROWS_WRITTEN = _family(MetricSpec(
    "llmops_clickhouse_rows_written", "counter", "Rows written to ClickHouse.", ("table",),
))
CLICKHOUSE_ROWS_REJECTED = _family(MetricSpec(
    "llmops_clickhouse_rows_rejected", "counter", "Rows ClickHouse rejected as bad data (dead-lettered).", ("table",),
))
SAFETY_FINDINGS = _family(MetricSpec(
    "llmops_safety_findings", "counter", "Safety scanner findings, by category, kind and the action taken.",
    ("category", "kind", "action"),
))
ALERTS_RAISED = _family(MetricSpec(
    "llmops_alerts_raised", "counter", "Alerts a service published to llm.alerts, by kind.", ("service", "kind"),
))

# --- Router ---------------------------------------------------------------------------------------------------------

ROUTED_REQUESTS = _family(MetricSpec(
    "llmops_router_requests", "counter", "Requests the router dispatched, per alias and chosen deployment.",
    ("alias", "deployment"),
))

# --- Rollouts (judge) ----------------------------------------------------------------------------------------------

ROLLOUT_WEIGHT = _family(MetricSpec(
    "llmops_rollout_weight", "gauge", "Share of an alias's traffic routed to a deployment (0-1), by role.",
    ("alias", "deployment", "role"),
))
ROLLOUT_GATE_VALUE = _family(MetricSpec(
    "llmops_rollout_gate_value", "gauge",
    "A gate's measured value on one side of the rollout at the latest decision (e.g. p95 latency in ms).",
    ("alias", "gate", "side"),
))
ROLLOUT_GATE_STATISTIC = _family(MetricSpec(
    "llmops_rollout_gate_statistic", "gauge",
    "A gate's numbers at the latest decision: the compared statistic (observed), its threshold, the e-value and "
    "the e-value that rolls back.",
    ("alias", "gate", "quantity"),
))
ROLLOUT_DECISIONS = _family(MetricSpec(
    "llmops_rollout_decisions", "counter",
    "Rollout events the judge read from llm.rollouts, by alias and action (start, step_up, hold, promote, rollback, "
    "abort); a restarted judge reads each alias's latest again.",
    ("alias", "action"),
))

# --- Gateway (OpenTelemetry HTTP semantic conventions) ---------------------------------------------------------

HTTP_SERVER_DURATION = _family(MetricSpec(
    "http_server_request_duration_seconds", "histogram",
    "Duration of HTTP server requests, streamed responses included (http.server.request.duration).",
    ("http_request_method", "http_route", "http_response_status_code"), DURATION_BUCKETS,
))
GATEWAY_CACHE_LOOKUPS = _family(MetricSpec(
    "llmops_gateway_cache_lookups", "counter", "Response-cache outcomes of the gateway's calls (hit, miss, bypass).",
    ("result",),
))

# --- Notifier -------------------------------------------------------------------------------------------------------

ALERT_DELIVERIES = _family(MetricSpec(
    "llmops_alert_deliveries", "counter",
    "Finished alert deliveries per sink (a webhook's name, or console) and outcome (delivered, rejected, exhausted, "
    "interrupted).",
    ("sink", "outcome"),
))


def record_completions(completions: Iterable[tuple[Completion, str, str]], operation: str = "chat") -> None:
    """The GenAI client metrics of finished completions, each given with its tenant and error type: duration (its
    ``total_ms``, as the replica measured it) and input and output token usage. Label children are looked up once
    per label set."""
    groups: dict[tuple[str, ...], list[Completion]] = {}
    for c, tenant, error_type in completions:
        key = (c.model_alias or c.model_name, c.model_name, c.deployment_id, tenant, c.finish_reason, error_type)
        groups.setdefault(key, []).append(c)
    for (request_model, response_model, deployment, tenant, finish, error), group in groups.items():
        common = {"gen_ai_operation_name": operation, "gen_ai_request_model": request_model,
                  "gen_ai_response_model": response_model, "deployment": deployment, "tenant": tenant}
        duration = OPERATION_DURATION.labels(**common, finish_reason=finish, error_type=error)
        tokens_in = TOKEN_USAGE.labels(**common, gen_ai_token_type="input")
        tokens_out = TOKEN_USAGE.labels(**common, gen_ai_token_type="output")
        for c in group:
            duration.observe(c.total_ms / 1000)
            tokens_in.observe(c.prompt_tokens)
            tokens_out.observe(c.completion_tokens)


class HttpServerMetrics:
    """ASGI middleware recording :data:`HTTP_SERVER_DURATION` per route template (never the raw path).

    The route is the template of the route that matched (``scope["route"].path``, set by Starlette's router),
    ``unmatched`` otherwise, so ids in paths never become label values.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        status = [500]

        async def send_recording_status(message: dict[str, Any]) -> None:
            if message.get("type") == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        start = time.perf_counter()
        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            route = getattr(scope.get("route"), "path", None) or "unmatched"
            HTTP_SERVER_DURATION.labels(
                http_request_method=str(scope.get("method", "")), http_route=route,
                http_response_status_code=str(status[0]),
            ).observe(time.perf_counter() - start)


def record_insert(table: str, *, duration_s: float, written: int, rejected: int, retries: int) -> None:
    """One ClickHouse insert call of the writer: its duration (retries included), rows stored and rejected, retries."""
    CLICKHOUSE_INSERT_DURATION.labels(table=table).observe(duration_s)
    CLICKHOUSE_ROWS_WRITTEN.labels(table=table).inc(written)
    if rejected:
        CLICKHOUSE_ROWS_REJECTED.labels(table=table).inc(rejected)
    if retries:
        CLICKHOUSE_INSERT_RETRIES.labels(table=table).inc(retries)


def record_rollout_event(event: RolloutEvent) -> None:
    """A rollout event the judge read: the decision count, the weights and each gate's latest numbers."""
    ROLLOUT_DECISIONS.labels(alias=event.alias, action=event.action).inc()
    for deployment, weight in event.weights.items():
        role = "stable" if deployment == event.stable_deployment else "canary"
        ROLLOUT_WEIGHT.labels(alias=event.alias, deployment=deployment, role=role).set(weight)
    for gate in event.gates:
        for side, value in (("canary", gate.canary_value), ("stable", gate.stable_value)):
            if value is not None:
                ROLLOUT_GATE_VALUE.labels(alias=event.alias, gate=gate.gate, side=side).set(value)
        quantities = {"observed": gate.observed, "threshold": gate.threshold, "e_value": gate.e_value,
                      "e_threshold": gate.e_threshold}
        for quantity, value in quantities.items():
            if value is not None:
                ROLLOUT_GATE_STATISTIC.labels(alias=event.alias, gate=gate.gate, quantity=quantity).set(value)


def exposition() -> bytes:
    """This process's metrics in the Prometheus text format (what the server returns)."""
    return generate_latest(REGISTRY)


@dataclass
class MetricsServer:
    """The running /metrics endpoint of this process."""

    host: str
    port: int
    _server: WSGIServer
    _thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


_server_lock = threading.Lock()
_server: MetricsServer | None = None


def start_metrics_server(settings: Settings) -> MetricsServer | None:
    """Serve this process's registry on ``settings.metrics_host:metrics_port`` (None when no port is set).

    Port 0 picks a free port (logged). One server per process: a second call returns the first server, so
    several services in one process (the demo) share one endpoint.
    """
    global _server
    LABEL_BOUND.limit = settings.metrics_max_label_values
    if settings.metrics_port is None:
        return None
    with _server_lock:
        if _server is None:
            httpd, thread = start_http_server(settings.metrics_port, addr=settings.metrics_host, registry=REGISTRY)
            _server = MetricsServer(settings.metrics_host, httpd.server_port, httpd, thread)
            log.info("metrics on %s", _server.url)
        return _server


def stop_metrics_server() -> None:
    """Close this process's metrics server, if one runs."""
    global _server
    with _server_lock:
        if _server is not None:
            _server.close()
            _server = None


RAY_SERVE_TAGS = frozenset({"deployment", "replica", "application", "route"})
"""Tags Ray Serve adds to every metric recorded in a replica (and refuses as tag keys)."""


def ray_metric(spec: MetricSpec, default_tags: dict[str, str] | None = None) -> Any:
    """The Ray Serve metric (``ray.serve.metrics``) for one of :data:`SERVER_SPECS`, for use inside a replica.

    Ray exports it from each node's metrics agent as ``ray_<name>`` with ``:`` replaced by ``_`` (counters gain
    ``_total``), and adds the ``deployment``, ``replica`` and ``application`` tags itself (so those are not
    tag keys here). The Prometheus scrape configs shipped with the project (deploy/prometheus/prometheus.yml,
    the ServiceMonitor in deploy/k8s/) rename ``ray_vllm_*`` to ``vllm:*`` and ``ray_gen_ai_*`` to ``gen_ai_*``,
    so dashboards use one set of names.
    """
    from ray.serve import metrics as ray_serve_metrics

    serve_metrics: Any = ray_serve_metrics  # its tag_keys annotation says tuple[str] for any tuple of str
    ray_name = spec.name.replace(":", "_")
    tag_keys = tuple(label for label in spec.labels if label not in RAY_SERVE_TAGS)
    metric: Any
    if spec.kind == "counter":
        metric = serve_metrics.Counter(ray_name, spec.documentation, tag_keys=tag_keys)
    elif spec.kind == "gauge":
        metric = serve_metrics.Gauge(ray_name, spec.documentation, tag_keys=tag_keys)
    else:
        metric = serve_metrics.Histogram(ray_name, spec.documentation, boundaries=list(spec.buckets or ()), tag_keys=tag_keys)
    if default_tags:
        metric.set_default_tags(default_tags)
    return metric


class ReplicaMetrics:
    """The metrics of one inference replica, recorded through Ray Serve's metrics API (create it inside the replica).

    ``completion(c)`` records the server-side GenAI histograms of a finished request and its prompt tokens looked up
    in / served from the prefix cache (``cached_tokens``); ``engine(...)`` sets the vLLM-named gauges. Ray adds the
    ``deployment`` and ``replica`` tags.
    """

    def __init__(self, model_name: str) -> None:
        self.model_name = model_name
        self._metrics = {spec.name: ray_metric(spec) for spec in SERVER_SPECS}

    def _engine_tags(self) -> dict[str, str]:
        return {"model_name": self.model_name}

    def completion(self, completion: Completion, *, operation: str = "chat") -> None:
        tags = {"gen_ai_operation_name": operation, "gen_ai_request_model": completion.model_alias,
                "gen_ai_response_model": completion.model_name or self.model_name}
        self._metrics[SERVER_REQUEST_DURATION.name].observe(completion.total_ms / 1000.0, tags={
            **tags, "finish_reason": completion.finish_reason, "error_type": completion.error.kind if completion.error else ""})
        if completion.ttft_ms is not None:
            self._metrics[SERVER_TIME_TO_FIRST_TOKEN.name].observe(completion.ttft_ms / 1000.0, tags=tags)
            if completion.completion_tokens > 1:
                per_token = (completion.total_ms - completion.ttft_ms) / 1000.0 / (completion.completion_tokens - 1)
                self._metrics[SERVER_TIME_PER_OUTPUT_TOKEN.name].observe(max(per_token, 0.0), tags=tags)
        if completion.prompt_tokens:
            self._metrics[PREFIX_CACHE_QUERIES.name].inc(completion.prompt_tokens, tags=self._engine_tags())
        if completion.cached_tokens:
            self._metrics[PREFIX_CACHE_HITS.name].inc(completion.cached_tokens, tags=self._engine_tags())

    def engine(self, *, running: int, waiting: int, kv_cache_usage: float) -> None:
        tags = self._engine_tags()
        self._metrics[REQUESTS_RUNNING.name].set(running, tags=tags)
        self._metrics[REQUESTS_WAITING.name].set(waiting, tags=tags)
        self._metrics[KV_CACHE_USAGE.name].set(kv_cache_usage, tags=tags)


def ray_exported_name(spec: MetricSpec) -> str:
    """The name under which Ray's metrics agent exports a replica metric (before relabelling)."""
    return "ray_" + spec.exposed_name.replace(":", "_")
