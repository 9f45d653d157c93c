-- Dead letters keep the original only as redacted text (the safety scanners' redaction, as for every stored text), its
-- first 8 KiB: the original bytes stay on the dead-letter topic. Size and SHA-256 identify the whole original.
ALTER TABLE {database}.dead_letters COMMENT COLUMN original 'the first 8 KiB of the original message as text (invalid UTF-8 replaced), redacted by the safety scanners';
ALTER TABLE {database}.dead_letters COMMENT COLUMN original_key 'the original key as text, redacted';
ALTER TABLE {database}.dead_letters ADD COLUMN IF NOT EXISTS original_size UInt64 DEFAULT 0;
ALTER TABLE {database}.dead_letters ADD COLUMN IF NOT EXISTS original_sha256 String DEFAULT '';

-- Every alert on llm.alerts lands here once (written by the stream app's alerts agent, whoever raised it).
ALTER TABLE {database}.alerts_log ADD COLUMN IF NOT EXISTS source LowCardinality(String) DEFAULT '';
