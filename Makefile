# The two commands of the README:
#   make book   build the Jupyter Book on the embedded phantom data (demo profile)
#   make test   run the test suite
# Both create .venv on first use. torch is installed first and pinned, because a bare
# range would pull a multi-GB CUDA build; on a GPU machine install your CUDA torch into
# .venv first (the stamp below then keeps it).
# make lab starts JupyterLab at the repository root on the project's kernel (this .venv's Python).
# make publish pushes the built book to the gh-pages branch with ghp-import (the GitHub Actions
# workflow .github/workflows/book.yml publishes with the official Pages actions instead).

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
# a package index for torch only, e.g. https://download.pytorch.org/whl/cpu (CI: no CUDA download)
TORCH_INDEX ?=
PROFILE ?= demo
JOBS   ?= 1
STAMP  := $(VENV)/.installed-stamp
# make publish: the built book, and where ghp-import pushes it
BOOK_HTML      ?= _build/html
PUBLISH_REMOTE ?= origin
PUBLISH_BRANCH ?= gh-pages
# make lab: extra arguments for jupyter lab, e.g. LAB_ARGS="--no-browser --port=8890"
LAB_ARGS ?=

.PHONY: test book lab publish results bench bench-gpu lint clean-book clean browser-deps help

help:
	@echo "make book    build the book on the embedded phantoms (profile $(PROFILE))"
	@echo "make test    run the test suite"
	@echo "make lab     JupyterLab on the project's kernel (.venv), e.g. notebooks/07_explorer.ipynb with live = True"
	@echo "make publish push the built book ($(BOOK_HTML)) to the $(PUBLISH_BRANCH) branch with ghp-import"
	@echo "make results PROFILE=paper   re-execute every notebook with another profile"
	@echo "make bench   speed/memory benchmarks into results/bench/"
	@echo "             (BENCH_ARGS=\"--authors-repo PATH --la-dir PATH\": against the authors' code, on real LA)"
	@echo "make bench-gpu  the same rows on CUDA in a few minutes (results/bench/*_cuda.csv)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: browser tests will be skipped"; }

test: $(STAMP) browser-deps
	$(PY) -m pytest -q --durations=30 tests

book: $(STAMP)
	$(VENV)/bin/versemi book --profile $(PROFILE)

# The .venv's own python3 kernel spec (its "python" is this .venv's interpreter) comes before any user-level
# one; --allow-root only where make runs as root (containers, Binder-like images).
lab: $(STAMP)
	JUPYTER_PREFER_ENV_PATH=1 $(VENV)/bin/jupyter lab --ServerApp.root_dir="$(CURDIR)" \
	  $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# Refuses, before installing anything, when there is no built book (BOOK_HTML=DIR points elsewhere).
publish:
	@test -f "$(BOOK_HTML)/index.html" || { echo "make publish: no built book: $(BOOK_HTML)/index.html is missing; run 'make book' first" >&2; exit 1; }
	@$(MAKE) --no-print-directory $(STAMP)
	$(VENV)/bin/ghp-import --no-jekyll --push --force --remote $(PUBLISH_REMOTE) --branch $(PUBLISH_BRANCH) \
	  --message "Publish the VerSemi companion book" "$(BOOK_HTML)"

results: $(STAMP)
	$(VENV)/bin/versemi book --profile $(PROFILE) --no-build

bench: $(STAMP)
	$(PY) -m bench.run --out results/bench $(BENCH_ARGS)

bench-gpu: $(STAMP)
	$(PY) -m bench.gpu --out results/bench $(BENCH_ARGS)

lint: $(STAMP)
	$(VENV)/bin/ruff check versemi tests

clean-book:
	rm -rf _build

clean: clean-book
	rm -rf $(VENV)
