-- Per consumer group and completions partition: every deployment window that ended before published_through was
-- published. On assignment the stream worker rebuilds the partition's windows from the raw tables from there (or
-- from window_recover_s ago, whichever is earlier) and republishes them, so a crash never loses a window.
CREATE TABLE IF NOT EXISTS {database}.stream_window_progress
(
    consumer_group     LowCardinality(String),
    src_topic          LowCardinality(String),
    src_partition      UInt32,
    published_through  DateTime64(3, 'UTC'),
    updated_at         DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY (consumer_group, src_topic, src_partition);
