# The two commands of the reskd book. Each creates (or refreshes, when requirements.txt or pyproject.toml changed)
# its own virtual environment in $(VENV) from requirements.txt.
#
#   make book   execute the chapters (PROFILE, default smoke) into book/ and build the HTML book into _build/html
#   make test   run the test suite (what CI runs): unit tests, every chapter in the smoke profile in a scratch
#               folder, nbval on the committed notebooks, and the book build with warnings as errors
#
# PROFILE defaults to smoke (seconds per chapter) until the cpu profile's trained artifacts are committed; then
# `make book PROFILE=cpu` loads and evaluates them (it would train any that are missing, which takes hours).

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= smoke
# How notebooks are executed: this venv's python as the `python3` kernel, inline figures, no progress bars.
NOTEBOOK_ENV := PATH="$(abspath $(VENV))/bin:$$PATH" TQDM_DISABLE=1 PYTHONHASHSEED=0 \
	MPLBACKEND=module://matplotlib_inline.backend_inline
# The book is built with _config.yml plus the repository URL and Colab buttons when `git remote` names one.
# (`jupyter-book build` through the venv's python, which finds it wherever pip put its console script)
BUILD := $(PY) -c "from jupyter_book.cli.main import main; main()" build . --warningiserror --keep-going \
	--config "$$($(PY) tools/book_config.py)"

.PHONY: env test unit chapters nbval build book clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

env: $(STAMP)

test: unit chapters nbval build

unit: $(STAMP)
	$(PY) -m pytest tests

# every chapter through papermill in the smoke profile, into a scratch folder (the committed notebooks stay as they are)
chapters: $(STAMP)
	scratch=$$(mktemp -d) && $(NOTEBOOK_ENV) $(PY) tools/run_book.py --profile smoke --output-dir "$$scratch" \
		&& rm -rf "$$scratch"

# re-execute the committed notebooks and compare their outputs with the stored ones
nbval: $(STAMP)
	$(NOTEBOOK_ENV) $(PY) -m pytest --nbval book/*.ipynb --nbval-sanitize-with book/nbval_sanitize.cfg \
		-p no:cacheprovider

build: $(STAMP)
	$(BUILD)

book: $(STAMP)
	$(NOTEBOOK_ENV) $(PY) tools/run_book.py --profile $(PROFILE)
	$(BUILD)

clean:
	rm -rf _build
