"""`llmops demo` (the main job) and `llmops smoke` (a model-free check of the stack)."""

from __future__ import annotations

import sys

import click

from services.cli.common import settings_of


@click.command()
@click.option("--healthy", is_flag=True, help="Roll out a canary that behaves like stable: it should be promoted.")
@click.option("--rate", "rate_per_s", default=2.0, show_default=True, help="Requests per second from the synthetic users.")
@click.option("--warmup", "warmup_s", default=30.0, show_default=True,
              help="Seconds of stable-only traffic before the rollout starts (the judge learns stable's latency).")
@click.option("--timeout", "timeout_s", default=600.0, show_default=True, help="Give up after this many seconds.")
@click.option("--keep-running/--stop", default=True, show_default=True, help="Leave the local stack running at the end.")
@click.option("--quantization", type=click.Choice(["int8"]), default=None,
              help="Both deployments: dynamic INT8 quantization of the model's Linear layers (default: FP32).")
@click.option("--speculative-tokens", type=click.IntRange(0, 16), default=0, show_default=True,
              help="Both deployments: prompt-lookup speculative decoding with up to N draft tokens per step (0: off).")
@click.option("--prefix-caching/--no-prefix-caching", default=True, show_default=True,
              help="Both deployments: reuse the KV cache of the shared system prompt.")
@click.pass_context
def demo(ctx: click.Context, healthy: bool, rate_per_s: float, warmup_s: float, timeout_s: float, keep_running: bool,
         quantization: str | None, speculative_tokens: int, prefix_caching: bool) -> None:
    """The main job: a canary rollout of the small model that rolls itself back, end to end.

    Starts the local stack (or uses external Kafka/ClickHouse from the settings), two Ray Serve deployments
    of SmolLM2 (stable chat-v1; canary chat-v2, whose generation config rambles: slower, costlier, graded
    lower), the stream worker, the judge, the gateway, the router and a console notifier; synthetic users call
    the gateway with the openai client and a grader scores the answers, while the demo shows traffic, weights
    and decisions. It ends when the canary is rolled back (or promoted with --healthy), says how long after
    the canary's first request, prints a summary read from ClickHouse and writes the rollout report (HTML).
    Exit 1 if the verdict is not the expected one.

    The engine options (--quantization, --speculative-tokens, --prefix-caching) are the deployment spec's
    builtin-engine options, applied to both deployments. The vLLM engine needs the separate serving environment
    (README, "Inference engines and the two environments"), so the demo, which runs the stream worker on Faust
    in the main one, cannot use it; `llmops serve smollm2-vllm-cpu` can.
    """
    from services.demo.run import DemoOptions, EngineOptions, run_demo

    engine = EngineOptions(quantization="int8" if quantization == "int8" else None,
                           speculative_tokens=speculative_tokens, prefix_caching=prefix_caching)
    opts = DemoOptions(healthy=healthy, rate_per_s=rate_per_s, warmup_s=warmup_s, timeout_s=timeout_s,
                       keep_running=keep_running, engine=engine)
    if not run_demo(settings_of(ctx), opts, echo=click.echo):
        sys.exit(1)


@click.command()
@click.option("--events", default=20, show_default=True, help="How many requests (and completions) to publish.")
@click.option("--keep-running/--stop", default=True, show_default=True, help="Leave the local stack running at the end.")
@click.pass_context
def smoke(ctx: click.Context, events: int, keep_running: bool) -> None:
    """Check the stack end to end without a model (fast).

    Starts the local stack (if local), creates the topics, applies the migrations, publishes sample
    requests, completions and feedback, reads them back through a consumer group into the ClickHouse raw
    tables, and prints what landed and where everything is.
    """
    from services.smoke import run_smoke

    run_smoke(settings_of(ctx), events=events, keep_running=keep_running, echo=click.echo)
