-- The human review queue (streams/concerns/review.py fills it; `llmops review` reads it). One row per request
-- and reason, so a replayed batch collapses. An item is pending until raw_feedback holds a row with
-- feedback_source = 'human' for its request (the label published by `llmops review label`).
CREATE TABLE IF NOT EXISTS {database}.review_items
(
    tenant_id        LowCardinality(String),
    occurred_at      DateTime64(3, 'UTC'),
    request_id       String,
    deployment_id    LowCardinality(String),
    reason           LowCardinality(String),
    injection_score  Nullable(Float64),
    toxicity_score   Nullable(Float64),
    feedback_score   Nullable(Float64),
    detail           String,
    prompt_text      String COMMENT 'redacted (PII always removed); empty when the queueing event had no text',
    text             String COMMENT 'redacted completion; empty when the queueing event had no text',
    queued_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(queued_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, request_id, reason)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY;
