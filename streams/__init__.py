"""Stream processing of llmops-stream: the stream worker that measures the traffic and writes ClickHouse.

One manual-commit aiokafka consumer loop (streams/app.py explains why not Faust) feeds the agents:
raw sink, dead letters, safety, cost, latency, feedback, drift, and the per-deployment windows the
canary judge consumes.
"""
