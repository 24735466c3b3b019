# The two commands the README promises: `make demo` and `make test`. Both start from `make install`.
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8866
DEMO_LIBRARY ?= data/demo-library
DEMO_HOME ?= .demo-home
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install system-deps demo test lint bench

install: $(VENV)/.installed

# torch is installed explicitly as the 2.13.0 CPU build first, so nothing pulls a CUDA build.
$(VENV)/.installed: pyproject.toml setup.py workbench/files/_halfgram.c workbench/files/_halfgram_kernels.h
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $@

# Debian packages the tests drive for real: a headless browser and a Redis server.
system-deps:
	@if command -v redis-server >/dev/null && { [ -x /usr/bin/chromium ] || [ -x /usr/lib/chromium/chromium ]; }; then \
		echo "system packages present"; \
	else \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium redis-server; \
	fi

$(DEMO_LIBRARY)/.built: data/make_demo_library.py | install
	$(PY) data/make_demo_library.py $(DEMO_LIBRARY) --force
	touch $@

# `workbench dashboard` also starts a private redis-server and the shared worker that owns the pipeline
# and the heavy jobs (REDIS=redis://host:6379/0 joins an existing Redis and its workers instead).
demo: install system-deps $(DEMO_LIBRARY)/.built
	$(VENV)/bin/workbench dashboard --home $(DEMO_HOME) --library $(DEMO_LIBRARY) --port $(PORT) --no-browser $(if $(REDIS),--redis $(REDIS))

test: install system-deps lint
	$(PY) -m pytest -q -p no:cacheprovider

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: install
	$(PY) benchmarks/scan.py
