# mmpsearch: the two commands of the README.
#   make demo   set up (if needed), then the main job on built-in synthetic data
#   make demo-quick  the same chain and table in minutes (a smaller schedule,
#                its own data and work dirs): a first check, not the result
#   make test   set up (if needed), then the whole test suite
#   make baseline  the two-step baseline that make demo prints beside PSDiff
VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
export VENV PYTHON

.PHONY: install demo demo-quick baseline video-demo test lint format gpu-check

install:
	@bash scripts/install.sh

demo: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" DEMO_VARIANT=full bash scripts/demo.sh

demo-quick: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" DEMO_VARIANT=quick bash scripts/demo.sh

baseline: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/baseline.sh

# search a person in two synthetic videos with the demo's PSDiff checkpoint
# (after make demo or make demo-quick): scripts/video_demo.sh
video-demo: install
	@PATH="$(abspath $(VENV))/bin:$$PATH" bash scripts/video_demo.sh

# Every GPU path (train with and without --amp, DiffPS, the gpu tests,
# speed) in a few minutes: tools/misc/gpu_check.sh, whose header says how to
# prepare a fresh GPU machine (WHEELS=dir). DEVICE=cpu runs it on the CPU,
# minus the CUDA-only steps. Not tied to `install`: a GPU machine keeps its
# own torch.
DEVICE ?= cuda
gpu-check:
	@DEVICE=$(DEVICE) WHEELS=$(WHEELS) PY=$(if $(wildcard $(PY)),$(PY),python3) \
	  bash tools/misc/gpu_check.sh

# The suite starts with the lint, so CI (which runs `make test`) lints too.
test: install lint
	@PATH="$(abspath $(VENV))/bin:$$PATH" $(PY) -m pytest tests -q $(PYTEST_ARGS)

# flake8, isort and yapf, with the settings of setup.cfg (isort skips the
# configs, whose base imports are ordered on purpose, and mmpsearch/.mim,
# links to configs/ and tools/): all three run, and lint fails if any finds a
# problem. `make format` applies isort and yapf.
LINT_PATHS := mmpsearch tools tests configs demo scripts
lint: install
	@status=0; \
	$(PY) -m flake8 $(LINT_PATHS) || status=1; \
	$(PY) -m isort --check-only --diff $(LINT_PATHS) || status=1; \
	$(PY) -m yapf --recursive --diff $(LINT_PATHS) || status=1; \
	exit $$status

format: install
	$(PY) -m isort $(LINT_PATHS)
	$(PY) -m yapf --recursive --in-place $(LINT_PATHS)
