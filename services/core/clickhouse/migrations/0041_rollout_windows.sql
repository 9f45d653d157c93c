-- Every deployment window the canary judge read, stored before it used it: a restarted judge rebuilds a running
-- rollout's evidence from here (and fixes a rollout's slow-request threshold from stable's minute before the start).
-- One row per fragment; a fragment published again replaces the earlier one (ReplacingMergeTree on received_at,
-- read with FINAL). source_partition -1: the window covers every partition. payload: the DeploymentWindow as JSON.
CREATE TABLE IF NOT EXISTS {database}.rollout_windows
(
    deployment_id     LowCardinality(String),
    window_start      DateTime64(3, 'UTC'),
    source_partition  Int32,
    prompt_version    String,
    payload           String,
    received_at       DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(received_at)
PARTITION BY toDate(received_at)
ORDER BY (deployment_id, window_start, source_partition, prompt_version)
TTL toDateTime(received_at) + INTERVAL 7 DAY;
