# One command per task; CI calls the same ones.
PYTHON ?= python3
VENV   ?= .venv
STAMP  := $(VENV)/.installed
# pytest-xdist workers, each with a redis-server of its own. Most of a test's time is
# spent waiting on a daemon or Redis, so more workers than cores still pays.
TEST_WORKERS ?= 4

.PHONY: demo test test-fast test-systemd test-prometheus chaos bench redis-server clean

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
	$(VENV)/bin/ruff format --check src tests scripts
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup

# Operator paths under the real systemd, booted in namespaces of its own (root; about
# 2 minutes; tests/sysd.py). Nothing on the host changes.
test-systemd: $(STAMP) redis-server
	$(VENV)/bin/python -m pytest -m systemd -p no:cacheprovider -rP --timeout 900 tests/test_systemd.py

# Debian's Prometheus scrapes a live `p35 run` and evaluates the shipped rules; a real
# Alertmanager routes them to a webhook (about 20 s; tests/test_prometheus_live.py).
test-prometheus: $(STAMP) redis-server
	$(VENV)/bin/python -m pytest -m prometheus -p no:cacheprovider -rP --timeout 240 tests/test_prometheus_live.py

# No daemon, no pip, no tmux, no systemd (tests/conftest.py fails a test that starts
# `p35 run`, tmux or pip without its marker).
test-fast: $(STAMP) redis-server
	$(VENV)/bin/python -m pytest -n $(TEST_WORKERS) --dist loadgroup -m "not e2e and not pip and not tmux and not systemd"

# The fault tests with more cycles, Redis down 30 s, the 10-minute memory run, 40,000
# fuzzed entries (about 15 minutes; docs/reliability.md).
chaos: $(STAMP) redis-server
	CHAOS=1 $(VENV)/bin/python -m pytest -p no:cacheprovider --timeout 900 -rP \
	  tests/test_faults.py tests/test_fuzz_daemon.py tests/test_exactly_once.py

# Throughput against the raw read speed and the naive design, latency, RSS, snapshots
# (about 15 minutes; docs/performance.md). BENCH_ARGS="--runs 1 --backlog 0" for a quick look.
bench: $(STAMP) redis-server
	$(VENV)/bin/python scripts/bench.py $(BENCH_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache build src/*.egg-info
