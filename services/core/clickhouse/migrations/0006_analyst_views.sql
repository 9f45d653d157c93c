-- Analyst views over the stream tables. All read FINAL, so they show deduplicated, converged numbers.

-- Feedback joined to completions by (tenant, request_id): per completion minute, deployment and prompt version.
-- Late feedback counts whenever it arrives (the join runs at query time).
CREATE VIEW IF NOT EXISTS {database}.v_feedback_minute AS
SELECT
    toStartOfMinute(c.occurred_at) AS minute,
    c.deployment_id AS deployment_id,
    c.prompt_version AS prompt_version,
    count() AS feedback,
    avg(f.score) AS mean_score,
    avg(f.score < 0.5) AS share_negative
FROM (SELECT tenant_id, request_id, score FROM {database}.raw_feedback FINAL) AS f
INNER JOIN (SELECT tenant_id, request_id, occurred_at, deployment_id, prompt_version FROM {database}.raw_completions FINAL) AS c
    ON f.tenant_id = c.tenant_id AND f.request_id = c.request_id
GROUP BY minute, deployment_id, prompt_version;

-- Cost by tenant and UTC day.
CREATE VIEW IF NOT EXISTS {database}.v_cost_by_tenant_day AS
SELECT
    toDate(minute) AS day,
    tenant_id,
    sum(requests) AS requests,
    sum(prompt_tokens) AS prompt_tokens,
    sum(completion_tokens) AS completion_tokens,
    sum(cached_tokens) AS cached_tokens,
    sum(unpriced) AS unpriced,
    sum(cost) AS cost
FROM {database}.agg_cost_minute FINAL
GROUP BY day, tenant_id;

-- Deployment health per minute: traffic, errors, latency percentiles, safety rate, feedback, latest drift share.
CREATE VIEW IF NOT EXISTS {database}.v_deployment_health_minute AS
SELECT
    l.minute AS minute,
    l.deployment_id AS deployment_id,
    l.requests AS requests,
    l.errors AS errors,
    if(l.requests = 0, 0, l.errors / l.requests) AS error_rate,
    l.errors_by_kind AS errors_by_kind,
    quantilesMerge(0.5, 0.95, 0.99)(l.ttft_state) AS ttft_ms_p50_p95_p99,
    quantilesMerge(0.5, 0.95, 0.99)(l.total_state) AS total_ms_p50_p95_p99,
    any(s.flagged_requests) AS safety_requests,
    if(l.requests = 0, 0, any(s.flagged_requests) / l.requests) AS safety_rate,
    any(fb.fb_count) AS feedback,
    any(fb.fb_mean) AS feedback_mean,
    any(d.drift_share) AS drift_share
FROM {database}.agg_latency_minute AS l FINAL
LEFT JOIN (
    SELECT minute, deployment_id, sum(requests) AS flagged_requests
    FROM {database}.agg_safety_minute FINAL WHERE scanned = 'completion' GROUP BY minute, deployment_id
) AS s ON s.minute = l.minute AND s.deployment_id = l.deployment_id
LEFT JOIN (
    SELECT minute, deployment_id, sum(feedback) AS fb_count, sum(mean_score * feedback) / sum(feedback) AS fb_mean
    FROM {database}.v_feedback_minute GROUP BY minute, deployment_id
) AS fb ON fb.minute = l.minute AND fb.deployment_id = l.deployment_id
LEFT JOIN (
    SELECT deployment_id, argMax(drift_share, checked_at) AS drift_share
    FROM {database}.drift_checks GROUP BY deployment_id
) AS d ON d.deployment_id = l.deployment_id
GROUP BY l.minute, l.deployment_id, l.requests, l.errors, l.errors_by_kind;

-- The most frequent safety findings by tenant, category, span kind and action.
CREATE VIEW IF NOT EXISTS {database}.v_top_safety_findings AS
SELECT
    tenant_id,
    category,
    arrayJoin(if(empty(kinds), [''], kinds)) AS kind,
    action,
    count() AS findings,
    uniqExact(request_id) AS requests,
    max(occurred_at) AS last_seen
FROM {database}.safety_findings FINAL
GROUP BY tenant_id, category, kind, action
ORDER BY findings DESC;
