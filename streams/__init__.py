"""Stream processing of llmops-stream: the stream worker, a faust-streaming app (``streams.app:app``).

Agents per input topic run the concern modules of :mod:`streams.concerns` (decode and dead letters, raw sink,
safety, cost and budgets, drift, minute aggregates, deployment windows for the canary judge, alerts) over each
batch; :mod:`streams.pipeline` composes them and :mod:`streams.app` wires them into Faust.
"""
