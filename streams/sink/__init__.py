"""ClickHouse side of the stream agents: a retrying writer, the rows of the stream tables, and aggregate recomputation."""
