-- The prompt registry mirrored from the compacted llm.prompts topic (the topic is the source of truth; every
-- gateway mirrors the versions it accepted, so a repeated insert collapses: ReplacingMergeTree, read FINAL).
CREATE TABLE IF NOT EXISTS {database}.prompt_versions
(
    name            String,
    version         UInt32,
    description     String,
    model_alias     String,
    messages        String COMMENT 'JSON list of {role, content} templates',
    variables       String COMMENT 'JSON list of {name, type, description, default, max_length}',
    params          String COMMENT 'JSON of the stored model parameters',
    content_hash    String,
    push_id         String,
    created_by      String,
    created_at      DateTime64(3, 'UTC'),
    src_offset      UInt64,
    ingested_at     DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (name, version);

-- Every label move; the current label is the latest move (argMax by src_offset), see v_prompt_labels.
CREATE TABLE IF NOT EXISTS {database}.prompt_label_moves
(
    name        String,
    label       String,
    version     UInt32,
    moved_by    String,
    moved_at    DateTime64(3, 'UTC'),
    src_offset  UInt64,
    ingested_at DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(ingested_at)
ORDER BY (name, label, src_offset);

CREATE VIEW IF NOT EXISTS {database}.v_prompt_labels AS
SELECT name, label, argMax(version, src_offset) AS version, max(moved_at) AS moved_at
FROM {database}.prompt_label_moves FINAL
GROUP BY name, label;

-- Cost and quality per prompt version (and deployment): completions, errors, tokens, priced cost, mean feedback.
CREATE VIEW IF NOT EXISTS {database}.v_prompt_version_stats AS
SELECT
    c.prompt_id AS prompt_id,
    c.prompt_version AS prompt_version,
    c.deployment_id AS deployment_id,
    count() AS completions,
    countIf(c.error_kind != '') AS errors,
    sum(c.prompt_tokens) AS prompt_tokens,
    sum(c.completion_tokens) AS completion_tokens,
    sum(k.cost) AS cost,
    if(count() = 0, 0, sum(k.cost) / count()) AS cost_per_completion,
    sum(f.n) AS feedback,
    if(sum(f.n) = 0, NULL, sum(f.score_sum) / sum(f.n)) AS mean_feedback
FROM (
    SELECT tenant_id, request_id, prompt_id, prompt_version, deployment_id, error_kind, prompt_tokens, completion_tokens
    FROM {database}.raw_completions FINAL WHERE prompt_id != ''
) AS c
LEFT JOIN (SELECT tenant_id, request_id, cost FROM {database}.cost_completions FINAL) AS k
    ON k.tenant_id = c.tenant_id AND k.request_id = c.request_id
LEFT JOIN (
    SELECT tenant_id, request_id, count() AS n, sum(score) AS score_sum FROM {database}.raw_feedback FINAL GROUP BY tenant_id, request_id
) AS f ON f.tenant_id = c.tenant_id AND f.request_id = c.request_id
GROUP BY prompt_id, prompt_version, deployment_id;
