"""The embedded local stack: a Tansu Kafka-protocol broker and a chdb-backed ClickHouse server.

Both are real servers in child processes, bound to loopback, with PIDs, logs and data under the data
directory. Nothing here is used when external Kafka/ClickHouse are configured.
"""
