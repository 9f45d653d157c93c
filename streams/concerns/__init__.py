"""The stream worker's concerns, one short module each: decode, sink, safety, cost, drift, windows, aggregates,
dead letters, alerts and safety-spike incidents. :mod:`streams.pipeline` runs them over the agents' batches."""
