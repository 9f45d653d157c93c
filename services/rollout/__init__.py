"""Canary rollouts: the spec, the gate statistics, the decision state machine, the judge and the CLI's functions."""
