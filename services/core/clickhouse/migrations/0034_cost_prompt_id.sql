-- The prompt of each cost row, next to its version: two registry prompts with the same version number on one
-- deployment no longer mix. agg_cost_minute keys its rows by it too (a column new in the same statement may join
-- the sorting key). Rows stored before this migration read '' (no prompt known).
ALTER TABLE {database}.cost_completions ADD COLUMN IF NOT EXISTS prompt_id String AFTER model_name;

ALTER TABLE {database}.agg_cost_minute
    ADD COLUMN IF NOT EXISTS prompt_id String AFTER model_name,
    MODIFY ORDER BY (minute, tenant_id, deployment_id, model_name, prompt_version, prompt_id);
