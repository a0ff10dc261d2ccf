# The two commands of the reskd book. Each creates (or refreshes, when requirements.txt or pyproject.toml changed)
# its own virtual environment in $(VENV) from requirements.txt.
#
#   make book   re-execute every chapter in the profile of its stored page (cpu: load the committed artifacts and
#               evaluate them, no training) into book/, then build the HTML book into _build/html; nothing is
#               written unless every chapter succeeds
#   make test   run the test suite (what CI runs): unit tests, every chapter in the smoke profile in a scratch
#               folder (the runs it trains in a scratch copy of artifacts/), nbval on the committed notebooks
#               (results files to a scratch folder), and the book build with warnings as errors; it changes no
#               committed file and adds none
#   make build  the HTML book from the stored pages (nothing executed): what the publishing workflow runs
#   make trial PROFILE=smoke   every chapter in one profile, into _build/chapters/<profile>/ (book/ stays as it is)

VENV ?= .venv
PYTHON ?= python3
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
PROFILE ?= smoke
# How notebooks are executed: this venv's python as the `python3` kernel, inline figures, no progress bars.
NOTEBOOK_ENV := PATH="$(abspath $(VENV))/bin:$$PATH" TQDM_DISABLE=1 PYTHONHASHSEED=0 \
	MPLBACKEND=module://matplotlib_inline.backend_inline
# The book is built with _config.yml plus the Colab buttons when its repository.url is set (tools/book_config.py).
# (`jupyter-book build` through the venv's python, which finds it wherever pip put its console script)
# REPOSITORY_URL (https://host/owner/name): the hosted repository for this build, as the publishing workflow passes it
REPOSITORY_URL ?=
BUILD := $(PY) -c "from jupyter_book.cli.main import main; main()" build . --warningiserror --keep-going \
	--config "$$($(PY) tools/book_config.py --repository-url '$(REPOSITORY_URL)')"

.PHONY: env test unit unit-1thread chapters nbval build book trial clean

$(STAMP): requirements.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	touch $(STAMP)

env: $(STAMP)

test: unit unit-1thread chapters nbval build

unit: $(STAMP)
	$(PY) -m pytest tests

# the same tests at one thread: floats differ with the thread count, and no test may hinge on them
unit-1thread: $(STAMP)
	OMP_NUM_THREADS=1 $(PY) -m pytest tests -q -p no:cacheprovider

# every chapter through papermill in the smoke profile, into a scratch folder (the committed notebooks stay as they
# are); the runs they train go to a scratch copy of artifacts/ (RESKD_ARTIFACTS), so the checkout gets no new folders
chapters: $(STAMP)
	scratch=$$(mktemp -d) && cp -R artifacts "$$scratch/artifacts" && $(NOTEBOOK_ENV) \
		RESKD_ARTIFACTS="$$scratch/artifacts" $(PY) tools/run_book.py --profile smoke --output-dir "$$scratch" \
		&& rm -rf "$$scratch"

# re-execute the committed notebooks and compare their outputs with the stored ones; the results files they write go
# to a scratch copy of results/ (RESKD_RESULTS), so the committed ones stay as they are
nbval: $(STAMP)
	scratch=$$(mktemp -d) && cp -R results "$$scratch/results" && $(NOTEBOOK_ENV) RESKD_RESULTS="$$scratch/results" \
		$(PY) -m pytest --nbval book/*.ipynb --nbval-sanitize-with book/nbval_sanitize.cfg -p no:cacheprovider \
		&& rm -rf "$$scratch"

build: $(STAMP)
	$(BUILD)

book: $(STAMP)
	$(NOTEBOOK_ENV) $(PY) tools/run_book.py
	$(BUILD)

trial: $(STAMP)
	$(NOTEBOOK_ENV) $(PY) tools/run_book.py --profile $(PROFILE)

clean:
	rm -rf _build
