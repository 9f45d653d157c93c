"""The Ray Serve application of one deployment: N replicas, each loading the model, running the engine and a
Kafka consumer loop (:class:`services.inference.replica.KafkaReplica`) in the deployment's consumer group.

``serve_deployment(spec)`` is what ``llmops serve DEPLOYMENT_SPEC`` calls. Replicas take no HTTP traffic (the
proxy is disabled); their input is Kafka. The engine is the spec's (:func:`services.inference.backends.build_engine`:
builtin or vLLM). Serve's health check fails a replica whose consumer loop or event pump died or whose engine is
unhealthy, so Serve replaces it; on graceful shutdown Serve calls ``__del__``, which finishes or releases in-flight
work.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any, Literal

import ray
import torch
from pydantic import BaseModel, ConfigDict, Field
from ray import serve
from ray.serve.handle import DeploymentHandle

from services.core.metrics import ReplicaMetrics
from services.core.settings import Settings, get_settings
from services.inference.backends import build_engine, check_engine
from services.inference.replica import KafkaReplica
from services.inference.spec import DeploymentSpec, resolve_spec_path

log = logging.getLogger(__name__)


class InferenceReplica:
    """One Serve replica: model + engine thread + Kafka loop thread. Not called over HTTP; see ``stats``."""

    def __init__(self, spec_data: dict[str, Any], settings_data: dict[str, Any], device: str) -> None:
        self.spec = DeploymentSpec.model_validate(spec_data)
        self.settings = Settings.model_validate(settings_data)
        if self.spec.torch_threads is not None:
            torch.set_num_threads(self.spec.torch_threads)
        self.engine = build_engine(self.spec, device, self.settings.data_dir)
        self.engine.start()
        try:
            replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside Serve (direct construction)
            replica_id = "local"
        self.metrics = ReplicaMetrics(self.spec.reported_model_name) if replica_id != "local" else None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self.kafka: KafkaReplica | None = None
        self._thread = threading.Thread(target=self._run_loop, args=(replica_id,), name="kafka-loop", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout=60):
            raise RuntimeError(f"the Kafka loop did not start within 60 s: {self._error!r}")
        if self._error is not None:
            raise RuntimeError(f"the Kafka loop failed to start: {self._error!r}")

    def _run_loop(self, replica_id: str) -> None:
        asyncio.set_event_loop(self._loop)

        async def main() -> None:
            self.kafka = KafkaReplica(self.spec, self.settings, self.engine, replica_id)
            if self.metrics is not None:
                self.kafka.on_completion = self.metrics.completion
                sampling = asyncio.ensure_future(self._sample_engine(self.metrics))
            ready = asyncio.ensure_future(self.kafka.ready.wait())
            run = asyncio.ensure_future(self.kafka.run())
            await asyncio.wait({ready, run}, return_when=asyncio.FIRST_COMPLETED)
            self._ready.set()
            try:
                await run
            finally:
                if self.metrics is not None:
                    sampling.cancel()

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:
            self._error = exc
            log.exception("the Kafka loop of %s failed", self.spec.deployment_id)
        finally:
            self._ready.set()

    async def _sample_engine(self, metrics: ReplicaMetrics) -> None:
        """The engine's load into the vLLM-named gauges, every second."""
        while True:
            s = await asyncio.to_thread(self.engine.stats)
            usage = s.kv_used_tokens / max(s.kv_capacity_tokens, 1)
            metrics.engine(running=s.running, waiting=s.waiting, kv_cache_usage=usage)
            await asyncio.sleep(1.0)

    async def check_health(self) -> None:
        """Serve calls this every few seconds; raising marks the replica unhealthy and Serve replaces it."""
        if self._error is not None or not self._thread.is_alive():
            raise RuntimeError(f"the Kafka loop is not running: {self._error!r}")
        if self.kafka is None:
            raise RuntimeError("the Kafka loop has not started")
        self.kafka.check_health()  # the event pump, the consumer loop and the engine

    async def stats(self) -> dict[str, Any]:
        assert self.kafka is not None
        engine = self.engine.stats()
        return {**vars(self.kafka.stats), "engine_steps": engine.steps, "running": engine.running,
                "waiting": engine.waiting, "kv_used_tokens": engine.kv_used_tokens, **engine.extra}

    async def __del__(self) -> None:
        if self.kafka is not None and self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self.kafka.stop(), self._loop)
            await asyncio.wrap_future(fut)
        self._thread.join(timeout=5)


def build_app(spec: DeploymentSpec, settings: Settings, device: str) -> serve.Application:
    """The Serve application for ``spec`` with ``device`` already resolved ('cpu' or 'cuda')."""
    # Any: serve.deployment's overloads do not type the class form (Deployment.bind is untyped)
    deployment: Any = serve.deployment(
        InferenceReplica,
        name=spec.deployment_id,
        num_replicas=spec.num_replicas,
        ray_actor_options=spec.actor_options(device),
        health_check_period_s=5.0,
        graceful_shutdown_timeout_s=spec.shutdown_grace_s + 15.0,
    )
    app: serve.Application = deployment.bind(spec.model_dump(), settings.model_dump(mode="json"), device)
    return app


def app_name(spec: DeploymentSpec) -> str:
    return f"inference-{spec.deployment_id}"


def cluster_device(spec: DeploymentSpec) -> str:
    """Resolve ``device='auto'`` against the Ray cluster: cuda if it has any GPU, else cpu."""
    if spec.device != "auto":
        return spec.device
    resources = ray.cluster_resources()  # type: ignore[no-untyped-call]  # ray has no type information here
    return "cuda" if resources.get("GPU", 0) > 0 else "cpu"


def serve_deployment(
    spec: DeploymentSpec,
    address: str | None = None,
    *,
    settings: Settings | None = None,
    blocking: bool = False,
) -> DeploymentHandle[Any]:
    """Start Ray (local, or connect to ``address``), then the deployment's Serve application.

    Returns when every replica has loaded its model and started its consumer loop. With ``blocking=True`` it then
    waits until Ctrl-C / SIGTERM and tears the application down gracefully (each replica finishes or releases
    its in-flight work) before returning. Otherwise ``stop_deployment(spec)`` does that.
    """
    settings = settings or get_settings()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True)
    serve.start(proxy_location="Disabled")
    device = cluster_device(spec)
    check_engine(spec, device)  # a clear error now rather than replicas failing to start
    handle = serve.run(build_app(spec, settings, device), name=app_name(spec), route_prefix=None)
    if blocking:
        stop = threading.Event()
        previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            while not stop.wait(1.0):
                pass
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            stop_deployment(spec)
    return handle


def stop_deployment(spec: DeploymentSpec) -> None:
    """Delete the application; each replica finishes or releases its in-flight work first."""
    serve.delete(app_name(spec), _blocking=True)


class ServeConfigArgs(BaseModel):
    """``args`` of an application in a Ray Serve config file (e.g. the serveConfigV2 of a KubeRay RayService)."""

    model_config = ConfigDict(extra="forbid")

    spec: str = Field(min_length=1, description="A deployment spec file in the image, or the name of a shipped spec.")
    device: Literal["auto", "cpu", "cuda"] = Field(default="auto", description="auto: cuda if the cluster has GPUs.")


def app_from_args(args: dict[str, Any]) -> serve.Application:
    """Application builder for Serve config files (``import_path: services.inference.serve_app:app_from_args``).

    The same application as ``llmops serve SPEC``; the platform settings come from the LLMOPS_* environment of
    the process that builds it (the cluster's pods).
    """
    parsed = ServeConfigArgs.model_validate(args)
    spec = DeploymentSpec.from_yaml(resolve_spec_path(parsed.spec))
    device = cluster_device(spec) if parsed.device == "auto" else parsed.device
    check_engine(spec, device)
    return build_app(spec, get_settings(), device)
