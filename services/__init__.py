"""Services of llmops-stream: settings, local infrastructure, Kafka and ClickHouse access, and the CLI."""
