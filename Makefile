# Everything runs from a project venv (.venv); `make install` creates it.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python

.PHONY: all install demo test lint fmt bench clean

all: lint test

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python 3.11+ is required"'
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,serve]'
	touch $@

install: $(BIN)/.installed

demo: install
	$(PY) -m llm_cascade.demo

test: install
	$(PY) -m pytest

lint: install
	$(BIN)/ruff format --check llm_cascade tests bench
	$(BIN)/ruff check llm_cascade tests bench
	$(BIN)/mypy

fmt: install
	$(BIN)/ruff format llm_cascade tests bench
	$(BIN)/ruff check --fix llm_cascade tests bench

bench: install
	$(PY) bench/bench_cli.py

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
