# mmpsearch: the two commands of the README.
#   make demo   set up (if needed), then the main job on built-in synthetic data
#   make test   set up (if needed), then the whole test suite
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export VENV PYTHON

.PHONY: install demo test lint

install:
	@bash scripts/install.sh

demo: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/demo.sh

test: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest tests -q $(PYTEST_ARGS)

lint: install
	@$(PY) -m flake8 mmpsearch tools tests configs demo
