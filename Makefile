# Two set-up commands for a fresh clone: `make demo` and `make test`.
# Each creates its own virtual environment; torch==2.13.0 is installed first so pip never
# pulls a newer CUDA build to satisfy `torch>=2.4`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: demo test lint venv clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[test,hf]'
	touch $@

venv: $(VENV)/.installed

demo: venv
	$(VENV)/bin/electrolite demo

# The structure checks first (about a minute): the import contracts of docs/architecture.md, ruff, mypy.
lint: venv
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/ruff check src tests bench scripts
	$(VENV)/bin/mypy src

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) demo-run .pytest_cache
