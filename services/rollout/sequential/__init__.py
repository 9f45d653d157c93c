"""Anytime-valid statistics for the canary judge: tests and confidence sequences that stay valid when they are
checked after every window (Ville's inequality), so the judge may decide the moment the evidence is there.

- :mod:`.counts`: the rate ratio of a count (errors, safety findings, slow requests), canary vs stable, from the
  bad events alone: a mixture of likelihood ratios (Lindon & Malek; Netflix's sequential regression detection).
- :mod:`.betting`: one-sample confidence sequences for a mean in [0, 1] by betting (Waudby-Smith & Ramdas),
  computed from each window's count, sum and sum of squares.
- :mod:`.asymptotic`: the asymptotic confidence sequence (Waudby-Smith et al.) for an unbounded mean (cost).

Everything here is numpy on arrays with any leading shape, so the judge (one rollout) and the benchmark (many
simulated seeds at once) run the same code.
"""
