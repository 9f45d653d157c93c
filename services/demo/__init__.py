"""The main job: a canary rollout of a small model on the embedded stack, closed loop, ending in a verdict."""
