-- Tables written by the stream agents (streams/). Every table is keyed so that a replayed batch (at-least-once
-- delivery) collapses to the same rows: per-event tables by their event identity, per-minute aggregates by
-- (minute, dimensions) with the latest recomputation winning (ReplacingMergeTree on computed_at). Read with FINAL.

-- Cost of each completion (price table in force at its time). cost is NULL when the model has no price:
-- never a silent zero (an 'unknown_model_price' alert is raised instead).
CREATE TABLE IF NOT EXISTS {database}.cost_completions
(
    tenant_id          LowCardinality(String),
    occurred_at        DateTime64(3, 'UTC'),
    request_id         String,
    deployment_id      LowCardinality(String),
    model_name         LowCardinality(String),
    prompt_version     String,
    prompt_tokens      UInt32,
    completion_tokens  UInt32,
    cached_tokens      UInt32,
    priced             UInt8,
    cost               Nullable(Decimal(38, 12)),
    currency           LowCardinality(String),
    src_topic          LowCardinality(String),
    src_partition      UInt32,
    src_offset         UInt64,
    ingested_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), request_id)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY;

-- One row per safety finding (span offsets and kinds only, never the matched value).
CREATE TABLE IF NOT EXISTS {database}.safety_findings
(
    tenant_id      LowCardinality(String),
    occurred_at    DateTime64(3, 'UTC'),
    request_id     String,
    deployment_id  LowCardinality(String),
    scanned        LowCardinality(String),
    finding_index  UInt16,
    category       LowCardinality(String),
    action         LowCardinality(String),
    score          Float64,
    kinds          Array(LowCardinality(String)),
    spans          String COMMENT 'JSON list of {start, end, kind}',
    ingested_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
PARTITION BY toYYYYMM(occurred_at)
ORDER BY (tenant_id, toDate(occurred_at), request_id, scanned, finding_index)
TTL toDateTime(occurred_at) + INTERVAL {raw_ttl_days} DAY;

-- Alerts raised by the agents, keyed by their stable alert_id: 'raise once' survives restarts.
CREATE TABLE IF NOT EXISTS {database}.alerts_log
(
    alert_id       String,
    kind           LowCardinality(String),
    severity       LowCardinality(String),
    tenant_id      LowCardinality(String),
    deployment_id  LowCardinality(String),
    title          String,
    detail         String,
    observed       Map(String, Float64),
    raised_at      DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(raised_at)
ORDER BY alert_id;

-- Drift checks per deployment (Evidently), one row per check.
CREATE TABLE IF NOT EXISTS {database}.drift_checks
(
    deployment_id     LowCardinality(String),
    checked_at        DateTime64(3, 'UTC'),
    reference_size    UInt32,
    current_size      UInt32,
    regime            LowCardinality(String),
    encoder           LowCardinality(String),
    drift_share       Float64,
    share_threshold   Float64,
    dataset_drifted   UInt8,
    drifted_features  Array(String),
    per_feature       String COMMENT 'JSON of FeatureDrift per feature',
    duration_s        Float64
)
ENGINE = ReplacingMergeTree
ORDER BY (deployment_id, checked_at);

-- Per-minute aggregates, recomputed from the raw tables (FINAL) for every minute a batch touched; a
-- recomputation replaces the previous row, so any replay converges to the same totals.
CREATE TABLE IF NOT EXISTS {database}.agg_cost_minute
(
    minute             DateTime('UTC'),
    tenant_id          LowCardinality(String),
    deployment_id      LowCardinality(String),
    model_name         LowCardinality(String),
    prompt_version     String,
    requests           UInt64,
    prompt_tokens      UInt64,
    completion_tokens  UInt64,
    cached_tokens      UInt64,
    unpriced           UInt64 COMMENT 'completions whose model had no price (their cost is not in cost)',
    cost               Decimal(38, 12),
    computed_at        DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, tenant_id, deployment_id, model_name, prompt_version);

-- Latency and errors per deployment per minute. The quantile columns hold aggregate-function *states*, so
-- minutes roll up into hours exactly with quantilesMerge; the table replaces (rather than merges) rows of the
-- same key, so a recomputed minute never double counts.
CREATE TABLE IF NOT EXISTS {database}.agg_latency_minute
(
    minute          DateTime('UTC'),
    deployment_id   LowCardinality(String),
    requests        UInt64,
    errors          UInt64,
    errors_by_kind  Map(String, UInt64),
    ttft_state      AggregateFunction(quantiles(0.5, 0.95, 0.99), Nullable(Float64)),
    total_state     AggregateFunction(quantiles(0.5, 0.95, 0.99), Float64),
    computed_at     DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, deployment_id);

CREATE TABLE IF NOT EXISTS {database}.agg_safety_minute
(
    minute         DateTime('UTC'),
    deployment_id  LowCardinality(String),
    scanned        LowCardinality(String),
    category       LowCardinality(String),
    action         LowCardinality(String),
    findings       UInt64,
    requests       UInt64 COMMENT 'distinct requests with such a finding',
    computed_at    DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree(computed_at)
PARTITION BY toYYYYMM(minute)
ORDER BY (minute, deployment_id, scanned, category, action);
