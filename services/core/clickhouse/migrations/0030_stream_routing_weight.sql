-- The router's weight for the deployment that served a request (InferenceRequest.routing_weight, copied onto the
-- completion by replicas): the stream worker averages it per deployment window, and rebuilds windows from here.
ALTER TABLE {database}.raw_completions ADD COLUMN IF NOT EXISTS routing_weight Nullable(Float64);
