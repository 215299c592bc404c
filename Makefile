# mmpsearch: the two commands of the README.
#   make demo   set up (if needed), then the main job on built-in synthetic data
#   make test   set up (if needed), then the whole test suite
#   make baseline  the two-step baseline that make demo prints beside PSDiff
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export VENV PYTHON

.PHONY: install demo baseline test lint

install:
	@bash scripts/install.sh

demo: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

baseline: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/baseline.sh

test: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest tests -q $(PYTEST_ARGS)

lint: install
	@$(PY) -m flake8 mmpsearch tools tests configs demo
