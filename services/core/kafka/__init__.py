"""Kafka access: client configuration, topic administration and typed producers/consumers."""
