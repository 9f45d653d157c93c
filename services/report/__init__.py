"""The rollout report: one self-contained HTML page telling a canary's story (``llmops rollout report ALIAS``)."""
