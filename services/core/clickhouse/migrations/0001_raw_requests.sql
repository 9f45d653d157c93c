-- Raw inference requests as published to llm.requests.
-- ReplacingMergeTree keyed by (tenant, day, request_id): a redelivered or re-sent request collapses to one row
-- (read with FINAL, or argMax by ingested_at). Text columns hold redacted text when the tenant's policy says so.
CREATE TABLE IF NOT EXISTS {database}.raw_requests
(
    tenant_id       LowCardinality(String),
    occurred_at     DateTime64(3, 'UTC'),
    request_id      String,
    event_id        UUID,
    application     LowCardinality(String),
    model_alias     LowCardinality(String),
    deployment_id   LowCardinality(String) COMMENT 'empty until routed',
    prompt_id       String,
    prompt_version  String,
    messages        String COMMENT 'JSON array of {role, content}, redacted per policy',
    params          String COMMENT 'JSON of the generation parameters',
    priority        UInt8,
    deadline        Nullable(DateTime64(3, 'UTC')),
    user_id         String,
    session_id      String,
    source          LowCardinality(String),
    trace_id        String,
    src_topic       LowCardinality(String),
    src_partition   UInt32,
    src_offset      UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), request_id)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY;
