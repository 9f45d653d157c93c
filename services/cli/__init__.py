"""The `llmops` command line."""
