-- Raw completions as published to llm.completions, success or error.
-- Keyed by (tenant, day, request_id): replicas deliver at least once, and a re-generated completion of the
-- same request collapses to the latest one, so counts and token sums never double count.
CREATE TABLE IF NOT EXISTS {database}.raw_completions
(
    tenant_id          LowCardinality(String),
    occurred_at        DateTime64(3, 'UTC'),
    request_id         String,
    event_id           UUID,
    application        LowCardinality(String),
    model_alias        LowCardinality(String),
    deployment_id      LowCardinality(String),
    model_name         LowCardinality(String),
    model_version      LowCardinality(String),
    prompt_id          String,
    prompt_version     String,
    prompt_text        String COMMENT 'redacted per policy',
    text               String COMMENT 'redacted per policy',
    finish_reason      LowCardinality(String),
    prompt_tokens      UInt32,
    completion_tokens  UInt32,
    cached_tokens      UInt32,
    queue_ms           Float64,
    ttft_ms            Nullable(Float64),
    total_ms           Float64,
    error_kind         LowCardinality(String),
    error_message      String,
    source             LowCardinality(String),
    trace_id           String,
    src_topic          LowCardinality(String),
    src_partition      UInt32,
    src_offset         UInt64,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), request_id)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY;
