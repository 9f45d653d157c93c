-- Raw feedback events. Several feedback events per request are legitimate (user and grader), so the key
-- ends with event_id: only a redelivery of the same event collapses.
CREATE TABLE IF NOT EXISTS {database}.raw_feedback
(
    tenant_id        LowCardinality(String),
    occurred_at      DateTime64(3, 'UTC'),
    request_id       String,
    event_id         UUID,
    score            Float64,
    label            String,
    comment          String COMMENT 'redacted per policy',
    feedback_source  LowCardinality(String),
    source           LowCardinality(String),
    trace_id         String,
    src_topic        LowCardinality(String),
    src_partition    UInt32,
    src_offset       UInt64,
    ingested_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), request_id, event_id)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY;
