# One command per task; CI calls the same ones.
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast bench redis-server clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

# redis-server from Debian when it is missing (needs root, or sudo).
redis-server:
	@command -v redis-server >/dev/null || { \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq redis-server; }

demo: $(STAMP) redis-server
	VENV=$(VENV) scripts/demo.sh

test: $(STAMP) redis-server
	$(VENV)/bin/ruff check src tests scripts
	$(VENV)/bin/python -m pytest

test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -m "not e2e"

# Throughput against the raw read speed and the naive design, latency, RSS, snapshots
# (about 4 minutes; docs/performance.md). BENCH_ARGS="--runs 1 --backlog 0" for a quick look.
bench: $(STAMP) redis-server
	$(VENV)/bin/python scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
