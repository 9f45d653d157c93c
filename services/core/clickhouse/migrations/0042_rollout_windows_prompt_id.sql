-- The judge's stored windows are fragments per prompt too (DeploymentWindow.prompt_id): two prompts with the same
-- version number on one deployment are two rows, not one replacing the other. Rows stored before read ''.
ALTER TABLE {database}.rollout_windows
    ADD COLUMN IF NOT EXISTS prompt_id String AFTER source_partition,
    MODIFY ORDER BY (deployment_id, window_start, source_partition, prompt_version, prompt_id);
