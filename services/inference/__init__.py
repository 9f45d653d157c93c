"""Inference replicas: deployment specs, model loading, the continuous-batching engine and the Kafka-fed Ray Serve app."""
