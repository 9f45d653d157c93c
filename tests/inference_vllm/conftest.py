"""The vLLM backend's tests run in the serving environment only (``make test-vllm``; ``make test`` calls it when
``.venv-serve`` exists). In the main environment, without vLLM, this directory is skipped as a whole."""

from __future__ import annotations

import importlib.util

collect_ignore_glob = [] if importlib.util.find_spec("vllm") is not None else ["test_*.py"]
