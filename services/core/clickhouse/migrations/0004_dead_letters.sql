-- Inputs that could not be decoded or processed. One row per (source position, consumer): a dead letter
-- written twice after a restart collapses to one.
CREATE TABLE IF NOT EXISTS {database}.dead_letters
(
    occurred_at    DateTime64(3, 'UTC'),
    src_topic      LowCardinality(String),
    src_partition  UInt32,
    src_offset     UInt64,
    consumer       LowCardinality(String),
    error_kind     LowCardinality(String),
    error          String,
    original       String COMMENT 'the original message value, raw bytes',
    original_key   Nullable(String),
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (src_topic, src_partition, src_offset, consumer)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY;
