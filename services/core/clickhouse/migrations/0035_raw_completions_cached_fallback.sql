-- Completion.cached (answered from the gateway's response cache: no model ran, deployment 'gateway-cache', no
-- tokens) and Completion.fallback (the answer came from the alias's fallback deployment after this one failed).
-- Rows stored before this migration read 0 and ''.
ALTER TABLE {database}.raw_completions
    ADD COLUMN IF NOT EXISTS cached UInt8,
    ADD COLUMN IF NOT EXISTS fallback_from_deployment LowCardinality(String) COMMENT 'Completion.fallback.from_deployment; empty: no fallback',
    ADD COLUMN IF NOT EXISTS fallback_reason LowCardinality(String) COMMENT 'Completion.fallback.reason (error, timeout); empty: no fallback';
