# Two set-up commands: `make book` (build the book into _build/html) and `make test` (run the test suite).
# Each creates or refreshes .venv with the pinned set in requirements.txt first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.fedmed-installed

# Where bloodmnist.npz is: $FEDMED_DATA if set, else ./data or ../shared/data when they hold the file,
# else the loader's default: ~/.fedmed/data when it holds the file, else medmnist's own ~/.medmnist (medmnist
# downloads it there when online, as on Colab).
ifndef FEDMED_DATA
  ifneq ($(wildcard data/bloodmnist.npz),)
    export FEDMED_DATA := $(abspath data)
  else ifneq ($(wildcard ../shared/data/bloodmnist.npz),)
    export FEDMED_DATA := $(abspath ../shared/data)
  endif
endif

.PHONY: book test venv data widget-js clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	# Without their dependencies: medmnist's pull torchvision and with it a CUDA build of torch;
	# dp-accounting's (the tests' independent accountant) pull dm-tree, unused, and downgrade attrs.
	$(PY) -m pip install -q --no-deps medmnist==3.0.2 dp-accounting==0.6.0 absl-py==2.5.1
	$(PY) -m pip install -q --no-deps --no-build-isolation -e .
	touch $@

data: $(STAMP)
	$(VENV)/bin/fedmed data

# The JavaScript that renders widgets in the static book, served by the book itself (no CDN): fetched once
# through npm and verified, then kept (git-ignored), so later builds are offline. book/_static_widgets/README.md
WIDGET_JS := book/_static_widgets/js/embed-amd.js
widget-js: $(WIDGET_JS)
$(WIDGET_JS): book/_static_widgets/SHA256SUMS scripts/fetch_widget_js.sh
	bash scripts/fetch_widget_js.sh

# One torch thread per chapter kernel: the chapters' models are small, and on a busy 2-core machine two OpenMP
# threads spin-wait for each other (measured on a shared 2-core box: 15 min / 393 CPU-s with 2 threads,
# 3.8 min / 112 CPU-s with 1). `make book BOOK_THREADS=2` to override.
BOOK_THREADS ?= 1
book: data $(WIDGET_JS)
	OMP_NUM_THREADS=$(BOOK_THREADS) FEDMED_PROGRESS=0 $(VENV)/bin/jupyter-book build . -W -n --keep-going
	@echo "Book built: _build/html/index.html"

# tests/test_book_html.py opens the built book in headless Chromium; it skips when _build/html or
# chromium is missing, unless FEDMED_REQUIRE_BOOK=1 (CI, after `make book`).
test: data
	$(PY) -m pytest tests --nbmake notebooks

clean:
	rm -rf _build .pytest_cache
