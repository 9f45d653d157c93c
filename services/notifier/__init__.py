"""``llmops notify``: consume ``llm.alerts`` and post each alert to webhooks (signed, retried) and the console."""
