"""ClickHouse access: the client factory and the migration runner."""
