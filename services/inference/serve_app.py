"""The Ray Serve application of one deployment: N replicas, each loading the model, running the engine and a
Kafka consumer loop (:class:`services.inference.replica.KafkaReplica`) in the deployment's consumer group.

``serve_deployment(spec)`` is what ``llmops serve DEPLOYMENT_SPEC`` calls. Replicas take no HTTP traffic (the
proxy is disabled); their input is Kafka. Serve's health check fails a replica whose consumer loop died, so Serve
replaces it; on graceful shutdown Serve calls ``__del__``, which finishes or releases in-flight work.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from typing import Any

import ray
import torch
from ray import serve
from ray.serve.handle import DeploymentHandle

from services.inference.engine import Engine, EngineLimits
from services.inference.model_loader import load_model
from services.inference.replica import KafkaReplica
from services.inference.spec import DeploymentSpec
from services.settings import Settings, get_settings

log = logging.getLogger(__name__)


class InferenceReplica:
    """One Serve replica: model + engine thread + Kafka loop thread. Not called over HTTP; see ``stats``."""

    def __init__(self, spec_data: dict[str, Any], settings_data: dict[str, Any], device: str) -> None:
        self.spec = DeploymentSpec.model_validate(spec_data)
        self.settings = Settings.model_validate(settings_data)
        if self.spec.torch_threads is not None:
            torch.set_num_threads(self.spec.torch_threads)
        loaded = load_model(
            self.spec.model_source, gguf_file=self.spec.gguf_file, dtype=self.spec.dtype, device=device,
            max_context=self.spec.max_context,
        )
        self.engine = Engine(loaded, EngineLimits(
            max_batch_size=self.spec.max_batch_size, token_budget=self.spec.token_budget,
            prefill_tokens_per_step=self.spec.prefill_tokens_per_step,
        ))
        self.engine.start()
        try:
            replica_id = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside Serve (direct construction)
            replica_id = "local"
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
            ready = asyncio.ensure_future(self.kafka.ready.wait())
            run = asyncio.ensure_future(self.kafka.run())
            await asyncio.wait({ready, run}, return_when=asyncio.FIRST_COMPLETED)
            self._ready.set()
            await run

        try:
            self._loop.run_until_complete(main())
        except BaseException as exc:  # noqa: BLE001 - reported through check_health
            self._error = exc
            log.exception("the Kafka loop of %s failed", self.spec.deployment_id)
        finally:
            self._ready.set()

    async def check_health(self) -> None:
        if self._error is not None or not self._thread.is_alive():
            raise RuntimeError(f"the Kafka loop is not running: {self._error!r}")

    async def stats(self) -> dict[str, Any]:
        assert self.kafka is not None
        return {**vars(self.kafka.stats), "engine_steps": self.engine.steps, "running": self.engine.num_running}

    async def __del__(self) -> None:
        if self.kafka is not None and self._thread.is_alive():
            fut = asyncio.run_coroutine_threadsafe(self.kafka.stop(), self._loop)
            await asyncio.wrap_future(fut)
        self._thread.join(timeout=5)


def build_app(spec: DeploymentSpec, settings: Settings, device: str) -> serve.Application:
    """The Serve application for ``spec`` with ``device`` already resolved ('cpu' or 'cuda')."""
    deployment = serve.deployment(
        InferenceReplica,
        name=spec.deployment_id,
        num_replicas=spec.num_replicas,
        ray_actor_options=spec.actor_options(device),
        health_check_period_s=5.0,
        graceful_shutdown_timeout_s=spec.shutdown_grace_s + 15.0,
    )
    return deployment.bind(spec.model_dump(), settings.model_dump(mode="json"), device)


def app_name(spec: DeploymentSpec) -> str:
    return f"inference-{spec.deployment_id}"


def cluster_device(spec: DeploymentSpec) -> str:
    """Resolve ``device='auto'`` against the Ray cluster: cuda if it has any GPU, else cpu."""
    if spec.device != "auto":
        return spec.device
    return "cuda" if ray.cluster_resources().get("GPU", 0) > 0 else "cpu"


def serve_deployment(
    spec: DeploymentSpec,
    address: str | None = None,
    *,
    settings: Settings | None = None,
    blocking: bool = False,
) -> DeploymentHandle:
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
