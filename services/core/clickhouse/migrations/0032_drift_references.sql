-- The reference window of each deployment's drift monitor (features of its first N completions, text embeddings
-- already projected), so a restarted stream worker compares against the same reference. The first one wins
-- (read with argMin(frame, created_at)).
CREATE TABLE IF NOT EXISTS {database}.drift_references
(
    deployment_id      LowCardinality(String),
    created_at         DateTime64(3, 'UTC'),
    encoder            LowCardinality(String),
    embedding_columns  UInt16,
    rows               UInt32,
    frame              String COMMENT 'JSON {column: [values]} of the features frame'
)
ENGINE = MergeTree
ORDER BY (deployment_id, created_at);
