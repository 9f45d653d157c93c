-- The sequential judge decides after every window, not per interval: each decision row also says when it was
-- decided (event time), when its step began, and per gate what it showed (status, both sides' values, the e-value
-- of its rollback test and the boundary, the confidence bounds of how much worse the canary is, the margin).
-- For these rows interval_index is the decision's event time in milliseconds since the rollout started (a key:
-- a decision written again after a restart replaces the row), interval_start the step's start and interval_end
-- the decision's event time; consecutive_failures is 0.
ALTER TABLE {database}.rollout_decisions
    ADD COLUMN IF NOT EXISTS step_seconds Nullable(Float64),
    ADD COLUMN IF NOT EXISTS gate_status Array(String),
    ADD COLUMN IF NOT EXISTS gate_canary_value Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS gate_stable_value Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS gate_e_value Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS gate_e_threshold Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS gate_worse_low Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS gate_worse_high Array(Nullable(Float64)),
    ADD COLUMN IF NOT EXISTS gate_margin Array(Nullable(Float64));
