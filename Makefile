# Quick start: `make demo` (distil a detector on the embedded BCCD subset)
# and `make test` (the whole test suite). Both set up .venv on first use.
VENV ?= .venv
PY := $(VENV)/bin/python
export VISIONKD_VENV := $(VENV)

.PHONY: setup demo test lint

setup:
	bash scripts/bootstrap.sh

demo: setup
	$(PY) tools/demo/run_demo.py

test: setup
	$(PY) -m pytest tests -q

lint: setup
	$(PY) -m ruff check visionkd tools tests configs projects
	$(PY) tools/lint_dockerfile.py docker/Dockerfile
