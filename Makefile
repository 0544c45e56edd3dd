# Two commands for a newcomer: `make demo` (install what the demo needs, build the demo
# dataset) and `make test` (add the test extras, run the suite). Everything lives in .venv;
# stage commands find it through PATH.
VENV ?= .venv
BIN := $(VENV)/bin
export PATH := $(abspath $(BIN)):$(PATH)

.PHONY: install install-dev demo test bench clean

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

$(VENV)/.installed: pyproject.toml
	test -d $(VENV) || python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e .
	$(BIN)/g4g fetch-weights
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed  # the models (torch, diffusers, ...), ray and the test tools
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

demo: install
	dvc repro
	@echo "dataset: $(CURDIR)/dataset (its figures: dvc metrics show; what each stage did: g4g report)"
	@echo "in a new shell, run 'source $(VENV)/bin/activate' first: dvc and the stages' python live there"

test: install-dev  # one process per core (at most 4); each test file stays on one process
	pytest -q -n auto --maxprocesses 4 --dist loadfile

bench: install-dev
	python bench/compose_throughput.py

clean:
	rm -rf build dataset .g4g
