"""The stream agents: decoding with dead letters, safety, cost and budgets, drift, and per-minute aggregates.

They run on the batches of :class:`streams.app.StreamsApp` (one manual-commit consumer loop); see
that module for why the loop is not a Faust ``take()`` agent.
"""
