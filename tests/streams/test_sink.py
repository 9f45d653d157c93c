"""Raw sink, cost, latency, feedback, windows, dead letters, alerts and redaction: one Faust worker process on a real
broker and ClickHouse, shared by the tests of this module."""

from __future__ import annotations

import hashlib
import json
import random
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import pytest

from schemas import Alert, CompletionError, DeploymentWindow, Feedback, decode, encode, make_event
from schemas.codec import DecodeErrorKind
from schemas.requests import FallbackRecord
from services.core.clickhouse.migrations import migrate
from services.core.settings import Settings
from streams.config import StreamsConfig
from streams.cost import PriceTable
from tests.streams.helpers import (
    TopicReader,
    WorkerProcess,
    completion_event,
    feedback_event,
    latest_fragments,
    make_config,
    producer,
    request_event,
    rows,
    scalar,
    wait_until,
)

UID = uuid.uuid4().hex[:8]
BUDGET_TENANT = f"budget-{UID}"
FLAG_TENANT = f"flag-{UID}"


@pytest.fixture(scope="module")
def worker(local_stack: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Settings, StreamsConfig]]:
    migrate(local_stack)
    tmp = tmp_path_factory.mktemp("streams")
    (tmp / "policies.yaml").write_text(f"default: {{pii: redact}}\ntenants:\n  {FLAG_TENANT}: {{pii: flag}}\n")
    (tmp / "budgets.yaml").write_text(f'tenants:\n  {BUDGET_TENANT}: "0.0010"\n')
    config = make_config(UID, tmp, policies_path=tmp / "policies.yaml", budgets_path=tmp / "budgets.yaml",
                         safety_spike_span_s=3)
    w = WorkerProcess(local_stack, config, tmp).start()
    yield local_stack, config
    assert w.stop() == 0, w.log()[-3000:]
    assert "Traceback" not in w.log(), w.log()[-5000:]


def _consume_all(settings: Settings, topic: str, n: int, timeout_s: float = 30.0,
                 until: Callable[[list[bytes]], bool] | None = None) -> list[bytes]:
    """Messages of a topic from the start, until there are ``n`` (or ``until`` holds)."""
    reader = TopicReader(settings, topic)
    try:
        return reader.until(until or (lambda got: len(got) >= n), timeout_s, f"{n} messages on {topic}")
    finally:
        reader.close()


def _windows(settings: Settings, config: StreamsConfig, deployments: list[str], requests: int,
             feedback: int = 0) -> list[DeploymentWindow]:
    """The latest copy of every published fragment of these deployments, once they cover ``requests`` completions
    and ``feedback`` feedback events."""
    latest: list[DeploymentWindow] = []

    def covered(got: list[bytes]) -> bool:
        latest[:] = [w for w in latest_fragments(got).values() if w.deployment_id in deployments]
        return (sum(w.requests for w in latest), sum(w.feedback_count for w in latest)) == (requests, feedback)

    _consume_all(settings, config.windows_topic, 0, 60, until=covered)
    return latest


def test_totals_match_the_events_sent(worker: tuple[Settings, StreamsConfig]) -> None:
    settings, config = worker
    tenant = f"tot-{UID}"
    rng = random.Random(7)
    prices = PriceTable.load(config.prices_path)
    models = ["gpt-4o-mini", "gpt-4o", "SmolLM2-135M-Instruct"]
    deployments = [f"{tenant}-d1", f"{tenant}-d2"]
    p = producer(settings)
    n = 240
    expected_cost = Decimal(0)
    exp_prompt = exp_completion = errors = 0
    scores: dict[str, list[float]] = {d: [] for d in deployments}
    for i in range(n):
        rid = f"{tenant}-{i}"
        dep = deployments[i % 2]
        p.send(config.requests_topic, request_event(tenant, rid, deployment=dep), key=rid)
        pt, ct, cached = rng.randint(1, 3000), rng.randint(0, 800), rng.randint(0, 5)
        model = models[i % 3]
        failed = i % 10 == 0
        ev = completion_event(
            tenant, rid, deployment_id=dep, model_name=model, prompt_tokens=pt, completion_tokens=ct,
            cached_tokens=cached, total_ms=rng.uniform(10, 900), ttft_ms=None if failed else rng.uniform(1, 90),
            finish_reason="error" if failed else "stop",
            error=CompletionError(kind="internal", message="boom") if failed else None,
        )
        expected_cost += prices.price(model, ev.occurred_at, pt, ct, cached).total
        exp_prompt += pt
        exp_completion += ct
        errors += failed
        p.send(config.completions_topic, ev, key=rid)
        if i % 3 != 2:  # feedback for two thirds of the requests, on both deployments
            score = rng.random()
            scores[dep].append(score)
            p.send(config.feedback_topic, feedback_event(tenant, rid, score), key=rid)
        if i % 40 == 0:  # a redelivered completion must not double count
            p.send(config.completions_topic, ev, key=rid)
    # One completion of a model without a price: stored unpriced, an alert, never a zero.
    p.send(config.completions_topic, completion_event(tenant, f"{tenant}-unpriced", deployment_id=deployments[0],
                                                      model_name=f"mystery-{UID}"))
    p.flush()

    wait_until(lambda: scalar(settings, "SELECT count() FROM agg_cost_minute FINAL WHERE tenant_id = {t:String} "
                                        "AND unpriced = 1", t=tenant) == 1, 30, "unpriced completion aggregated")
    wait_until(lambda: scalar(settings, "SELECT sum(requests) FROM agg_cost_minute FINAL WHERE tenant_id = {t:String}",
                              t=tenant) == n + 1, 30, "cost aggregates cover every completion")

    # The three topics are consumed independently: wait for each (a wrong total times out with its last value).
    n_feedback = sum(len(v) for v in scores.values())
    for table, expected_rows in (("raw_requests", n), ("raw_completions", n + 1), ("raw_feedback", n_feedback)):
        def all_rows_landed(table: str = table, expected_rows: int = expected_rows) -> bool:
            return bool(scalar(settings, f"SELECT count() FROM {table} FINAL WHERE tenant_id = {{t:String}}",
                               t=tenant) == expected_rows)

        wait_until(all_rows_landed, 30, f"{expected_rows} rows in {table}")
    agg = rows(settings, "SELECT sum(requests), sum(prompt_tokens), sum(completion_tokens), sum(unpriced), sum(cost) "
                         "FROM agg_cost_minute FINAL WHERE tenant_id = {t:String} AND model_name != {m:String}",
               t=tenant, m=f"mystery-{UID}")[0]
    assert agg[:4] == (n, exp_prompt, exp_completion, 0)
    assert Decimal(agg[4]) == expected_cost
    unpriced = rows(settings, "SELECT priced, cost FROM cost_completions FINAL WHERE request_id = {r:String}",
                    r=f"{tenant}-unpriced")
    assert unpriced == [(0, None)]
    wait_until(lambda: scalar(settings, "SELECT count() FROM alerts_log WHERE alert_id LIKE {a:String}",
                              a=f"unknown_model_price:mystery-{UID}:%") == 1, 30, "the unknown-price alert logged")
    day = rows(settings, "SELECT requests, cost FROM v_cost_by_tenant_day WHERE tenant_id = {t:String}", t=tenant)
    assert sum(r[0] for r in day) == n + 1 and sum(Decimal(r[1]) for r in day) == expected_cost

    # Latency and errors per deployment per minute; quantile states merge across minutes.
    lat = rows(settings, "SELECT sum(requests), sum(errors), quantilesMerge(0.5, 0.95, 0.99)(total_state) "
                         "FROM agg_latency_minute FINAL WHERE deployment_id IN {d:Array(String)}", d=deployments)[0]
    assert lat[0] == n + 1 and lat[1] == errors
    assert 10 <= lat[2][0] <= lat[2][1] <= lat[2][2] <= 900
    by_kind = rows(settings, "SELECT sumMap(errors_by_kind) FROM agg_latency_minute FINAL "
                             "WHERE deployment_id IN {d:Array(String)}", d=deployments)[0][0]
    assert by_kind == {"internal": errors}
    hourly = rows(settings, "SELECT sum(requests), sum(errors) FROM v_latency_hour WHERE deployment_id IN {d:Array(String)}",
                  d=deployments)[0]
    assert hourly == (n + 1, errors)
    # The hour's percentiles are the merge of the minutes' states: equal to merging them here.
    merged = rows(settings, "SELECT deployment_id, toStartOfHour(minute) AS h, quantilesMerge(0.5, 0.95, 0.99)(total_state) "
                            "FROM agg_latency_minute FINAL WHERE deployment_id IN {d:Array(String)} "
                            "GROUP BY deployment_id, h ORDER BY deployment_id, h", d=deployments)
    by_hour = rows(settings, "SELECT deployment_id, hour, total_ms_p50_p95_p99 FROM v_latency_hour "
                             "WHERE deployment_id IN {d:Array(String)} ORDER BY deployment_id, hour", d=deployments)
    assert by_hour == merged

    # Windows for the judge: fragments per source partition, published once ended; later copies replace earlier ones.
    # Feedback counts in the window of its own time, attributed to its completion's deployment.
    published = _windows(settings, config, deployments, n + 1, sum(len(v) for v in scores.values()))
    assert sum(w.requests for w in published) == n + 1
    assert sum(w.errors for w in published) == errors
    assert sum(w.priced_requests for w in published) == n
    assert sum(w.prompt_tokens for w in published) == exp_prompt + 10  # + the unpriced completion's
    assert sum(w.cost_total for w in published) == pytest.approx(float(expected_cost), rel=1e-9)
    assert all(w.source_partition is not None and w.window_seconds == config.window_seconds for w in published)
    with_requests = [w for w in published if w.requests]
    assert all(w.total_ms.p50 is not None and 0 < len(w.latency_sample_ms) <= w.requests for w in with_requests)
    assert all(sum(w.latency_histogram.values()) == w.requests for w in published)
    for dep, values in scores.items():
        mine = [w for w in published if w.deployment_id == dep]
        assert sum(w.feedback_count for w in mine) == len(values)
        assert sum(w.feedback_score_sum for w in mine) == pytest.approx(sum(values))
        assert sum(w.feedback_score_sumsq for w in mine) == pytest.approx(sum(v * v for v in values))
        assert sum(w.feedback_negative for w in mine) == sum(1 for v in values if v < 0.5)
    for dep, values in scores.items():
        fb = rows(settings, "SELECT sum(feedback), sum(mean_score * feedback), sum(share_negative * feedback) "
                            "FROM v_feedback_minute WHERE deployment_id = {d:String}", d=dep)[0]
        assert fb[0] == len(values)
        assert fb[1] == pytest.approx(sum(values))
        assert fb[2] == pytest.approx(sum(1 for v in values if v < 0.5))


def test_prompts_cache_hits_and_fallbacks_are_told_apart(worker: tuple[Settings, StreamsConfig]) -> None:
    """Two prompts with the same version number on one deployment stay apart in cost rows, minute aggregates and
    windows; a cache hit is stored as cached (no tokens, cost 0) and a fallback names the deployment that failed."""
    settings, config = worker
    tenant = f"prm-{UID}"
    dep, fb = f"{tenant}-d", f"{tenant}-fb"
    p = producer(settings)
    sent: list[tuple[str, str, dict[str, Any]]] = [
        ("summarize", dep, {}), ("summarize", dep, {}), ("summarize", dep, {}), ("translate", dep, {}),
        ("translate", dep, {}),
        ("summarize", "gateway-cache", dict(cached=True, prompt_tokens=0, completion_tokens=0, ttft_ms=0.0, total_ms=0.0)),
        ("summarize", fb, dict(fallback=FallbackRecord(from_deployment=dep, reason="timeout")))]
    for i, (prompt, deployment, extra) in enumerate(sent):
        rid = f"{tenant}-{i}"
        p.send(config.completions_topic, completion_event(tenant, rid, deployment_id=deployment, prompt_id=prompt,
                                                          prompt_version="3", model_alias="chat", **extra), key=rid)
    p.flush()

    expected = {(dep, "summarize"): 3, (dep, "translate"): 2, ("gateway-cache", "summarize"): 1, (fb, "summarize"): 1}
    wait_until(lambda: dict(((d, pid), int(n)) for d, pid, n in rows(
        settings, "SELECT deployment_id, prompt_id, sum(requests) FROM agg_cost_minute FINAL WHERE tenant_id = {t:String} "
                  "GROUP BY deployment_id, prompt_id", t=tenant)) == expected, 30, "minute aggregates per prompt")
    costs = rows(settings, "SELECT deployment_id, prompt_id, prompt_version, count(), sum(cost) FROM cost_completions FINAL "
                           "WHERE tenant_id = {t:String} GROUP BY deployment_id, prompt_id, prompt_version", t=tenant)
    assert {(d, pid, v, n) for d, pid, v, n, _ in costs} == {(d, pid, "3", n) for (d, pid), n in expected.items()}
    assert [Decimal(c) for d, *_, c in costs if d == "gateway-cache"] == [Decimal(0)]
    stored = rows(settings, "SELECT deployment_id, cached, fallback_from_deployment, fallback_reason FROM raw_completions "
                            "FINAL WHERE tenant_id = {t:String} AND (cached = 1 OR fallback_from_deployment != '')", t=tenant)
    assert sorted(stored) == sorted([("gateway-cache", 1, "", ""), (fb, 0, dep, "timeout")])

    published = _windows(settings, config, [dep], 5)
    by_prompt: dict[str | None, int] = {}
    for w in published:
        assert w.prompt_version == "3"
        by_prompt[w.prompt_id] = by_prompt.get(w.prompt_id, 0) + w.requests
    assert by_prompt == {"summarize": 3, "translate": 2}


def test_budget_crossed_raises_one_alert(worker: tuple[Settings, StreamsConfig]) -> None:
    settings, config = worker
    p = producer(settings)
    # gpt-4o: 2.50 per 1M input tokens -> 1000 tokens = 0.0025 each; the budget (0.0010) is crossed on the first.
    for i in range(30):
        p.send(config.completions_topic, completion_event(BUDGET_TENANT, f"{BUDGET_TENANT}-{i}", model_name="gpt-4o",
                                                          prompt_tokens=1000, completion_tokens=0))
    p.flush()
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}",
                              t=BUDGET_TENANT) == 30, 30, "budget tenant's completions stored")
    wait_until(lambda: scalar(settings, "SELECT count() FROM alerts_log FINAL WHERE kind = 'budget' "
                                        "AND tenant_id = {t:String}", t=BUDGET_TENANT), 30, "the budget alert")
    # Later batches of the same day do not raise it again.
    for i in range(30, 40):
        p.send(config.completions_topic, completion_event(BUDGET_TENANT, f"{BUDGET_TENANT}-{i}", model_name="gpt-4o",
                                                          prompt_tokens=1000, completion_tokens=0))
    p.flush()
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}",
                              t=BUDGET_TENANT) == 40, 30, "later completions stored")
    assert scalar(settings, "SELECT count() FROM alerts_log WHERE kind = 'budget' AND tenant_id = {t:String}",
                  t=BUDGET_TENANT) == 1
    alerts = [decode(v) for v in _consume_all(settings, config.alerts_topic, 1,
                                              until=lambda got: any(BUDGET_TENANT.encode() in v for v in got))]
    assert [a.payload.kind for a in alerts if a.tenant_id == BUDGET_TENANT] == ["budget"]


def test_malformed_events_reach_dead_letters_and_good_ones_are_processed(
    worker: tuple[Settings, StreamsConfig],
) -> None:
    settings, config = worker
    tenant = f"dl-{UID}"
    p = producer(settings)
    topics = [config.requests_topic, config.completions_topic, config.feedback_topic]
    goods = [json.loads(encode(ev)[0]) for ev in (
        request_event(tenant, "x"), completion_event(tenant, "x"), feedback_event(tenant, "x", 0.5))]
    invalid_payloads: list[dict[str, Any]] = [{"messages": []}, {"prompt_tokens": -5}, {"score": 7}]

    def bad(kind: DecodeErrorKind, t: int) -> bytes:
        good = goods[t]
        if kind == DecodeErrorKind.NOT_JSON:
            return b"{not json"
        if kind == DecodeErrorKind.EMPTY:
            return b""
        if kind == DecodeErrorKind.UNKNOWN_TYPE:
            return json.dumps(dict(good, event_type="inference.nope")).encode()
        if kind == DecodeErrorKind.UNSUPPORTED_VERSION:
            return json.dumps(dict(good, schema_version=99)).encode()
        return json.dumps(dict(good, payload=dict(good["payload"], **invalid_payloads[t]))).encode()

    kinds = [DecodeErrorKind.NOT_JSON, DecodeErrorKind.UNKNOWN_TYPE, DecodeErrorKind.UNSUPPORTED_VERSION,
             DecodeErrorKind.INVALID, DecodeErrorKind.EMPTY]
    n_good = 0
    for i in range(1000):
        p.send_raw(topics[i % 3], bad(kinds[i % 5], i % 3), key=f"bad-{i}".encode())
        if i % 10 == 0:
            rid = f"{tenant}-{i}"
            p.send(config.completions_topic, completion_event(tenant, rid), key=rid)
            n_good += 1
    p.flush()
    counts = wait_until(
        lambda: (got := dict(rows(settings, "SELECT error_kind, count() FROM dead_letters FINAL "
                                            "WHERE src_topic IN {t:Array(String)} GROUP BY error_kind", t=topics)))
        and sum(got.values()) >= 1000 and got, 60, "1000 dead letters")
    assert counts == {k.value: 200 for k in kinds}
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}",
                              t=tenant) == n_good, 30, f"{n_good} good completions stored")
    sample = rows(settings, "SELECT original, consumer, error FROM dead_letters FINAL WHERE src_topic = {t:String} "
                            "AND error_kind = 'not_json' LIMIT 1", t=topics[0])[0]
    assert sample[0] == "{not json" and sample[1] == config.consumer_name and "not_json" in sample[2]
    letters = [decode(v).payload for v in _consume_all(settings, config.deadletter_topic, 1000, 60)]
    assert len({(d.topic, d.partition, d.offset) for d in letters}) == 1000
    assert {d.error_kind for d in letters} == {k.value for k in kinds}


def test_pii_is_redacted_before_storage_per_tenant_policy(worker: tuple[Settings, StreamsConfig]) -> None:
    settings, config = worker
    redact_tenant = f"pii-{UID}"
    email, card = "jane.doe@example.com", "4111 1111 1111 1111"
    text = f"Sure. Contact {email} and pay with {card}."
    prompt = f"my email is {email}"
    p = producer(settings)
    for tenant in (redact_tenant, FLAG_TENANT):
        rid = f"{tenant}-1"
        p.send(config.requests_topic, request_event(tenant, rid, text=prompt), key=rid)
        p.send(config.completions_topic, completion_event(tenant, rid, text=text, prompt_text=prompt), key=rid)
        p.send(config.feedback_topic, feedback_event(tenant, rid, 0.2).model_copy(update={
            "payload": Feedback(request_id=rid, score=0.2, comment=f"reach me at {email}")}), key=rid)
    p.flush()
    both = [redact_tenant, FLAG_TENANT]
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_feedback FINAL WHERE tenant_id IN {t:Array(String)}",
                              t=both) == 2, 30, "both tenants stored")
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id IN {t:Array(String)}",
                              t=both) == 2, 30, "both completions stored")
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_requests FINAL WHERE tenant_id IN {t:Array(String)}",
                              t=both) == 2, 30, "both requests stored")

    stored = rows(settings, "SELECT c.prompt_text, c.text, r.messages, f.comment FROM raw_completions AS c FINAL "
                            "JOIN raw_requests AS r FINAL ON r.request_id = c.request_id "
                            "JOIN raw_feedback AS f FINAL ON f.request_id = c.request_id WHERE c.tenant_id = {t:String}",
                  t=redact_tenant)
    assert len(stored) == 1
    blob = " ".join(stored[0])
    assert email not in blob and card not in blob and "4111" not in blob
    assert "[REDACTED:email]" in stored[0][1] and "[REDACTED:credit_card]" in stored[0][1]
    assert "[REDACTED:email]" in stored[0][0] and "[REDACTED:email]" in stored[0][3]
    # The flag-only tenant keeps its text (so the redaction above is the policy's doing, not the table's).
    kept = scalar(settings, "SELECT text FROM raw_completions FINAL WHERE tenant_id = {t:String}", t=FLAG_TENANT)
    assert email in kept
    # Findings: in the table and on the safety topic, with spans only.
    findings = rows(settings, "SELECT scanned, category, action, kinds FROM safety_findings FINAL "
                              "WHERE tenant_id = {t:String} ORDER BY scanned, finding_index", t=redact_tenant)
    assert ("completion", "pii", "redact", ["email"]) in findings
    assert ("completion", "pii", "redact", ["credit_card"]) in findings
    assert ("prompt", "pii", "redact", ["email"]) in findings
    raw_events = _consume_all(settings, config.safety_topic, len(findings))
    events = [decode(v) for v in raw_events]
    mine = [e for e in events if e.tenant_id == redact_tenant]
    assert len(mine) == len(findings)
    assert all(email.encode() not in v and b"4111" not in v for v in raw_events)
    assert all(s.end > s.start for e in mine for s in e.payload.spans)
    wait_until(lambda: scalar(settings, "SELECT sum(findings) FROM agg_safety_minute FINAL WHERE deployment_id = 'dep-a' "
                                        "AND category = 'pii'") >= len(findings), 30, "safety counted per minute")



def test_feedback_joins_its_completion_whenever_either_arrives(worker: tuple[Settings, StreamsConfig]) -> None:
    settings, config = worker
    tenant = f"late-{UID}"
    dep = f"{tenant}-dep"
    p = producer(settings)
    # Feedback before its completion (early), and feedback for a completion stored long before (late).
    p.send(config.feedback_topic, feedback_event(tenant, f"{tenant}-early", 0.1), key=f"{tenant}-early")
    p.send(config.completions_topic, completion_event(tenant, f"{tenant}-late", deployment_id=dep, prompt_version="7"))
    p.flush()
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_feedback FINAL WHERE tenant_id = {t:String}",
                              t=tenant) == 1, 30, "early feedback stored")
    assert scalar(settings, "SELECT count() FROM v_feedback_minute WHERE deployment_id = {d:String}", d=dep) == 0
    p.send(config.completions_topic, completion_event(tenant, f"{tenant}-early", deployment_id=dep, prompt_version="7"))
    p.send(config.feedback_topic, feedback_event(tenant, f"{tenant}-late", 0.9), key=f"{tenant}-late")
    p.flush()
    def joined() -> list[tuple[object, ...]]:
        return rows(settings, "SELECT prompt_version, sum(feedback), sum(mean_score * feedback), "
                              "sum(share_negative * feedback) FROM v_feedback_minute WHERE deployment_id = {d:String} "
                              "GROUP BY prompt_version", d=dep)

    got = wait_until(lambda: (r := joined()) and r[0][1] == 2 and r, 30, "both feedback events joined")
    assert got  # what wait_until returns is truthy: the joined rows
    assert got[0][0] == "7" and got[0][2] == pytest.approx(1.0) and got[0][3] == pytest.approx(1.0)


def test_a_safety_spike_is_one_incident_one_alert_when_it_starts_and_one_when_it_ends(
    worker: tuple[Settings, StreamsConfig],
) -> None:
    settings, config = worker
    deployment = f"spiky-{UID}"
    tenant = f"spike-{UID}"
    p = producer(settings)

    last_pii = 0.0

    def send(lo: int, hi: int, pii: bool) -> None:
        nonlocal last_pii
        if pii:
            last_pii = time.time()
        for i in range(lo, hi):
            text = f"write to person{i}@example.com" if pii else "nothing to see"
            p.send(config.completions_topic, completion_event(tenant, f"{tenant}-{i}", deployment_id=deployment,
                                                              text=text), key=f"{tenant}-{i}")
        p.flush()

    def alerts() -> list[tuple[str, str, dict[str, float]]]:
        return rows(settings, "SELECT alert_id, title, observed FROM alerts_log FINAL WHERE kind = 'safety_spike' "
                              "AND deployment_id = {d:String} ORDER BY raised_at", d=deployment)

    send(0, 30, pii=True)  # every completion leaks an email: 100% of the deployment's requests flagged
    [(opened, title, observed)] = wait_until(alerts, 30, "the safety spike alert")
    assert "100% of requests had a safety finding" in title and observed["flagged_share"] == 1.0
    stored = scalar(settings, "SELECT count() FROM raw_completions WHERE tenant_id = {t:String}", t=tenant)
    send(30, 60, pii=True)  # the incident goes on in later windows: no new alert
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}",
                              t=tenant) == 60 > stored, 30, "the second wave stored")
    assert [a[0] for a in alerts()] == [opened]
    # Clean traffic after the span: the incident resolves, once.
    # The span is event time: clean completions made once the flagged windows left it.
    wait_until(lambda: time.time() > last_pii + config.safety_spike_span_s + config.window_seconds, 30,
               "the flagged windows are older than the span")
    send(60, 100, pii=False)
    got = wait_until(lambda: len(a := alerts()) == 2 and a, 30, "the resolution alert")
    assert got  # what wait_until returns is truthy: the two alerts
    assert got[1][0] == opened + ":resolved" and "resolved" in got[1][1]
    assert scalar(settings, "SELECT count() FROM alerts_log WHERE deployment_id = {d:String}", d=deployment) == 2


def test_every_alert_on_the_topic_is_logged_once_whoever_raised_it(worker: tuple[Settings, StreamsConfig]) -> None:
    settings, config = worker
    alert = Alert(alert_id=f"rollout:chat:{UID}:rolled_back", kind="rollout", severity="critical",
                  title="chat-v2 rolled back", detail="p95 latency x3", deployment_id="chat-v2",
                  observed={"p95_latency_ratio": 3.0})
    p = producer(settings)
    for _ in range(3):  # the judge republished it after a restart
        p.send(config.alerts_topic, make_event(alert, source="rollout.judge", tenant_id="platform"),
               key=alert.alert_id)
    p.send_raw(config.alerts_topic, b"not an alert", key=b"junk")
    p.flush()
    wait_until(lambda: scalar(settings, "SELECT count() FROM alerts_log WHERE alert_id = {a:String}",
                              a=alert.alert_id) == 1, 30, "the judge's alert logged")
    wait_until(lambda: scalar(settings, "SELECT count() FROM dead_letters FINAL WHERE src_topic = {t:String}",
                              t=config.alerts_topic) == 1, 30, "the junk dead-lettered")
    assert rows(settings, "SELECT kind, source, tenant_id, observed FROM alerts_log WHERE alert_id = {a:String}",
                a=alert.alert_id) == [("rollout", "rollout.judge", "platform", {"p95_latency_ratio": 3.0})]


def test_dead_letters_store_redacted_text_and_the_topic_keeps_the_original(
    worker: tuple[Settings, StreamsConfig],
) -> None:
    settings, config = worker
    tenant = f"dlpii-{UID}"
    email, phone = f"leak.{UID}@example.com", "+1 415 555 0142"
    good = json.loads(encode(request_event(tenant, "x", text=f"mail {email} or call {phone}"))[0])
    invalid = json.dumps(dict(good, payload=dict(good["payload"], priority=99))).encode()  # fails validation
    p = producer(settings)
    for i in range(20):
        p.send_raw(config.requests_topic, invalid, key=f"dlpii-{i}".encode())
    p.flush()
    stored = wait_until(lambda: (got := rows(settings, "SELECT original, original_size, original_sha256 FROM dead_letters "
                                                       "FINAL WHERE src_topic = {t:String} AND position(original, "
                                                       "{m:String}) > 0", t=config.requests_topic, m=tenant))
                        and len(got) == 20 and got, 30, "20 dead letters stored")
    assert stored  # what wait_until returns is truthy: the 20 rows
    assert all(email not in text and "555 0142" not in text and "[REDACTED:email]" in text for text, _, _ in stored)
    assert all(size == len(invalid) and sha == hashlib.sha256(invalid).hexdigest() for _, size, sha in stored)
    def originals(got: list[bytes]) -> list[bytes]:
        return [letter.original() for letter in (decode(v).payload for v in got) if tenant.encode() in letter.original()]

    on_topic = originals(_consume_all(settings, config.deadletter_topic, 1, until=lambda got: len(originals(got)) >= 20))
    assert on_topic == [invalid] * 20  # the topic keeps the original bytes (for a replay), PII included


def test_a_poison_row_is_dead_lettered_and_the_rest_of_its_batch_is_stored(worker: tuple[Settings, StreamsConfig]) -> None:
    settings, config = worker
    tenant = f"poison-{UID}"
    p = producer(settings)
    for i in range(1000):
        # A token count over 2**32 passes validation (the codec reads 64-bit integers), but not the UInt32 columns.
        tokens = 2**40 if i == 500 else 10
        p.send(config.completions_topic, completion_event(tenant, f"{tenant}-{i}", prompt_tokens=tokens),
               key=f"{tenant}-{i}")
    p.flush()
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}",
                              t=tenant) == 999, 60, "999 completions stored")
    [(kind, error)] = wait_until(lambda: rows(settings, "SELECT error_kind, error FROM dead_letters FINAL "
                                                        "WHERE src_topic = {t:String} AND position(original, {r:String}) > 0",
                                              t=config.completions_topic, r=f'"{tenant}-500"'), 30, "the poison dead-lettered")
    assert kind == "rejected_by_clickhouse" and "raw_completions" in error
    assert scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE request_id = {r:String}",
                  r=f"{tenant}-500") == 0
    # The worker goes on: a later completion is stored.
    p.send(config.completions_topic, completion_event(tenant, f"{tenant}-after"), key=f"{tenant}-after")
    p.flush()
    wait_until(lambda: scalar(settings, "SELECT count() FROM raw_completions FINAL WHERE tenant_id = {t:String}",
                              t=tenant) == 1000, 30, "the worker kept going")
