-- Every canary judge decision (and the start/abort commands the judge saw), one row per judged interval:
-- a decision written again after a judge restart replaces the row (ReplacingMergeTree on written_at). Read with FINAL.
-- interval_index is the analysis interval since the rollout started (event time); start and abort rows have -1.
CREATE TABLE IF NOT EXISTS {database}.rollout_decisions
(
    alias                 LowCardinality(String),
    rollout_id            String,
    interval_index        Int64,
    action                LowCardinality(String),
    interval_start        DateTime64(3, 'UTC'),
    interval_end          DateTime64(3, 'UTC'),
    step                  UInt16,
    stable_deployment     LowCardinality(String),
    canary_deployment     LowCardinality(String),
    weights               Map(String, Float64),
    reason                String,
    consecutive_failures  UInt16,
    canary_requests       UInt64,
    stable_requests       UInt64,
    gate                  Array(String),
    gate_passed           Array(UInt8),
    gate_observed         Array(Nullable(Float64)),
    gate_threshold        Array(Float64),
    gate_canary_samples   Array(UInt64),
    gate_stable_samples   Array(UInt64),
    gate_detail           Array(String),
    written_at            DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(written_at)
PARTITION BY toYYYYMM(interval_end)
ORDER BY (alias, rollout_id, interval_index, action);
