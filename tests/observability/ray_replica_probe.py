"""A Ray Serve replica that records through :class:`services.core.metrics.ReplicaMetrics`, run as a subprocess by
test_ray_metrics.py: ``python -m tests.observability.ray_replica_probe METRICS_PORT``. Prints ``ready`` once the
replica recorded, then waits for SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading

import ray
from ray import serve

from schemas.completions import Completion
from services.core.metrics import ReplicaMetrics


@serve.deployment(name="probe-dep", num_replicas=1, ray_actor_options={"num_cpus": 0})
class Probe:
    def __init__(self) -> None:
        self.metrics = ReplicaMetrics("probe-model")

    def record(self) -> int:
        for i in range(5):
            self.metrics.completion(Completion(
                request_id=f"r{i}", tenant="t", model_alias="chat", deployment_id="probe-dep", model_name="probe-model",
                finish_reason="stop", prompt_tokens=20, completion_tokens=21, cached_tokens=8, ttft_ms=120.0 + i,
                total_ms=1120.0 + i,
            ))
        self.metrics.engine(running=3, waiting=2, kv_cache_usage=0.25)
        return 5


def main() -> None:
    port = int(sys.argv[1])
    for attempt in range(3):  # Ray gives its raylet 30 s to register; a loaded machine can miss that
        try:
            ray.init(num_cpus=1, include_dashboard=False, _metrics_export_port=port, log_to_driver=False)
            break
        except Exception:
            ray.shutdown()
            if attempt == 2:
                raise
    serve.start(proxy_location="Disabled")
    handle = serve.run(
        Probe.bind(),  # type: ignore[attr-defined]  # mypy ignores a class decorator's result (here a Deployment)
        name="probe", route_prefix=None,
    )
    assert handle.record.remote().result() == 5
    print("ready", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    stop.wait(300)
    serve.shutdown()  # type: ignore[no-untyped-call]  # unannotated in Ray
    ray.shutdown()


if __name__ == "__main__":
    main()
