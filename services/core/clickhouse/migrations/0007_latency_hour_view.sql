-- Latency and errors per deployment per hour, rolled up from the per-minute quantile states (exact merge of
-- the minutes' states, not an average of their percentiles).
CREATE VIEW IF NOT EXISTS {database}.v_latency_hour AS
SELECT
    toStartOfHour(minute) AS hour,
    deployment_id,
    sum(requests) AS requests,
    sum(errors) AS errors,
    sumMap(errors_by_kind) AS errors_by_kind,
    quantilesMerge(0.5, 0.95, 0.99)(ttft_state) AS ttft_ms_p50_p95_p99,
    quantilesMerge(0.5, 0.95, 0.99)(total_state) AS total_ms_p50_p95_p99
FROM {database}.agg_latency_minute FINAL
GROUP BY hour, deployment_id;
