"""Engine liveness: a failing step finishes every request it held (prefill included), a raising callback breaks
nothing else, and the health check reports repeated failures and a dead engine thread."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, cast

import pytest
from transformers import PreTrainedModel

from services.inference.engine import Engine, EngineLimits, EngineRequest, EngineResult, SamplingParams
from services.inference.engine_api import EngineUnhealthy
from services.inference.model_loader import LoadedModel


class FaultyModel:
    """The real model, except that the next ``times`` forwards matching ``when`` raise ``error``."""

    def __init__(self, model: Any, when: Callable[[dict[str, Any]], bool], times: int,
                 error: BaseException | None = None) -> None:
        self.model, self.when, self.times = model, when, times
        self.error = error or RuntimeError("injected failure")

    def __call__(self, **kwargs: Any) -> Any:
        if self.times > 0 and self.when(kwargs):
            self.times -= 1
            raise self.error
        return self.model(**kwargs)

    def install(self, engine: Engine) -> None:
        """Stand in for ``engine``'s model (the engine only calls its model, as this class can be called)."""
        engine.model = cast(PreTrainedModel, self)


def _is_prefill(kwargs: dict[str, Any]) -> bool:
    return bool(kwargs["past_key_values"].get_seq_length() == 0)


def _req(loaded: LoadedModel, rid: str, max_tokens: int = 8) -> EngineRequest:
    ids = loaded.tokenizer(f"request {rid}", add_special_tokens=False)["input_ids"]
    return EngineRequest(request_id=rid, prompt_ids=ids, sampling=SamplingParams(max_tokens=max_tokens))


def _wait(cond: Callable[[], bool], timeout_s: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


def test_a_failing_prefill_finishes_every_request_it_held(tiny_loaded: LoadedModel) -> None:
    engine = Engine(tiny_loaded, EngineLimits(max_batch_size=8))
    results: dict[str, list[EngineResult]] = {}

    def on_finish(r: EngineResult) -> None:
        results.setdefault(r.request_id, []).append(r)

    engine.submit(_req(tiny_loaded, "running", max_tokens=300), None, on_finish)
    engine.run_step()
    engine.run_step()
    assert engine.num_running == 1
    FaultyModel(tiny_loaded.model, _is_prefill, times=1).install(engine)
    engine.submit(_req(tiny_loaded, "new-1"), None, on_finish)
    engine.submit(_req(tiny_loaded, "new-2"), None, on_finish)
    assert engine.run_step() is False  # the step failed: newcomers (being prefilled) and the running row
    assert sorted(results) == ["new-1", "new-2", "running"]
    for rid, got in results.items():
        assert len(got) == 1, rid
        assert got[0].finish_reason == "error" and got[0].error_kind == "internal"
        assert "injected failure" in (got[0].error_message or "")
    assert not engine.has_work() and engine.stats().kv_used_tokens == 0
    engine.check_health()  # one failure is not a broken engine

    engine.submit(_req(tiny_loaded, "after"), None, on_finish)  # and it keeps serving
    while engine.has_work():
        engine.run_step()
    assert results["after"][0].error_kind is None and results["after"][0].completion_tokens > 0
    assert engine.stats().extra["failed_steps"] == 0


def test_a_raising_callback_breaks_no_other_request(tiny_loaded: LoadedModel) -> None:
    engine = Engine(tiny_loaded)
    done: list[str] = []

    def explode(_r: EngineResult) -> None:
        raise RuntimeError("the caller's bug")

    engine.submit(_req(tiny_loaded, "bad", max_tokens=3), lambda *_: None, explode)
    engine.submit(_req(tiny_loaded, "good", max_tokens=6), None, lambda r: done.append(r.request_id))
    while engine.has_work():
        engine.run_step()
    assert done == ["good"] and engine.stats().extra["failed_steps"] == 0


def test_health_check_reports_repeated_step_failures(tiny_loaded: LoadedModel) -> None:
    engine = Engine(tiny_loaded)
    FaultyModel(tiny_loaded.model, lambda _kw: True, times=10**6).install(engine)
    engine.start()
    try:
        finished: list[EngineResult] = []
        for i in range(3):
            engine.submit(_req(tiny_loaded, f"r{i}"), None, finished.append)

            def all_finished(n: int = i + 1) -> bool:
                return len(finished) == n

            assert _wait(all_finished)
        assert all(r.error_kind == "internal" for r in finished)
        with pytest.raises(EngineUnhealthy, match="3 engine steps failed in a row"):
            engine.check_health()
    finally:
        engine.stop()


def test_health_check_reports_a_dead_engine_thread(tiny_loaded: LoadedModel) -> None:
    engine = Engine(tiny_loaded)
    FaultyModel(tiny_loaded.model, lambda _kw: True, times=1, error=SystemExit("thread killed")).install(engine)
    engine.start()
    try:
        engine.check_health()
        engine.submit(_req(tiny_loaded, "r"), None, None)
        assert _wait(lambda: engine._thread is not None and not engine._thread.is_alive())
        with pytest.raises(EngineUnhealthy, match="the engine thread died: SystemExit"):
            engine.check_health()
    finally:
        engine.stop()
