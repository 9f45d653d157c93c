-- Gateway API keys: only a hash of each secret is stored. A change (revocation, new limits) is a new row with a
-- later updated_at (ReplacingMergeTree keeps the latest; read FINAL). Every gateway polls this table.
CREATE TABLE IF NOT EXISTS {database}.gateway_api_keys
(
    key_id             String,
    tenant_id          LowCardinality(String),
    name               String,
    key_hash           String COMMENT 'sha256 of the secret, hex',
    requests_per_minute  UInt32 COMMENT '0 = unlimited',
    tokens_per_minute    UInt32 COMMENT '0 = unlimited',
    daily_budget       Nullable(Decimal(38, 12)) COMMENT 'NULL = unlimited; cost per UTC day',
    models             Array(String) COMMENT 'aliases this key may use; empty = all',
    created_at         DateTime64(3, 'UTC'),
    revoked_at         Nullable(DateTime64(3, 'UTC')),
    updated_at         DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY key_id;

-- Which key made each request (and whether the cache answered it): the join key from API keys to the cost
-- stream's rows, for per-key token rates and budgets, and the cache's savings (tokens an answer would have cost).
CREATE TABLE IF NOT EXISTS {database}.gateway_requests
(
    key_id                   String,
    tenant_id                LowCardinality(String),
    request_id               String,
    occurred_at              DateTime64(3, 'UTC'),
    model_alias              LowCardinality(String),
    gateway_instance         LowCardinality(String),
    status                   UInt16,
    cached                   UInt8,
    saved_prompt_tokens      UInt32,
    saved_completion_tokens  UInt32
)
ENGINE = ReplacingMergeTree(occurred_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), request_id)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY;
