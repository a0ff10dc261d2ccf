# The two commands of the reskd book. Each creates (or refreshes, when requirements.txt or pyproject.toml changed)
# its own virtual environment in $(VENV) from requirements.txt.
#
#   make book   execute the chapters and build the HTML book into _build/html
#   make test   run the test suite (what CI runs)

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= cpu

.PHONY: env test book clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

env: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest tests

book: $(STAMP)
	$(VENV)/bin/jupyter-book build . --warningiserror --keep-going

clean:
	rm -rf _build
