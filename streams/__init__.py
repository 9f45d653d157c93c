"""Stream processing of llmops-stream: Faust agents that measure the traffic and write ClickHouse."""
