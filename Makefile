# The two commands of the README:
#   make book   build the Jupyter Book on the embedded phantom data (demo profile)
#   make test   run the test suite
# Both create .venv on first use. torch is installed first and pinned, because a bare
# range would pull a multi-GB CUDA build; on a GPU machine install your CUDA torch into
# .venv first (the stamp below then keeps it).

PYTHON ?= python3.11
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
PROFILE ?= demo
JOBS   ?= 1
STAMP  := $(VENV)/.installed-stamp

.PHONY: test book results bench bench-gpu lint clean-book clean browser-deps help

help:
	@echo "make book    build the book on the embedded phantoms (profile $(PROFILE))"
	@echo "make test    run the test suite"
	@echo "make results PROFILE=paper   re-execute every notebook with another profile"
	@echo "make bench   speed/memory benchmarks into results/bench/"
	@echo "             (BENCH_ARGS=\"--authors-repo PATH --la-dir PATH\": against the authors' code, on real LA)"
	@echo "make bench-gpu  the same rows on CUDA in a few minutes (results/bench/*_cuda.csv)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install "$(TORCH)"
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

browser-deps:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	  || echo "chromium not installed: browser tests will be skipped"; }

test: $(STAMP) browser-deps
	$(PY) -m pytest -q tests

book: $(STAMP)
	$(VENV)/bin/versemi book --profile $(PROFILE)

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
