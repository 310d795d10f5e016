# The two commands: `make run` and `make test`. Both create or reuse .venv and install.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
HOST ?= 127.0.0.1
PORT ?= 8080

.PHONY: install run test lint typecheck pytest clean fuzz

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

## Start the complete system: demo data, credentials, API and worker on SQLite. Refused
## before anything starts when something already listens on HOST:PORT (a `make run` running).
run: $(STAMP)
	@if $(BIN)/python -c 'import socket, sys; socket.create_connection((sys.argv[1], int(sys.argv[2])), 1).close()' \
	  $(HOST) $(PORT) 2>/dev/null; then \
	  echo "make run: $(HOST):$(PORT) is taken (is \`make run\` already running?); stop it, or use another port: make run PORT=$$(( $(PORT) + 1 ))" >&2; \
	  exit 1; fi
	$(BIN)/iod demo --url http://$(HOST):$(PORT)
	IOD_ISSUER=$${IOD_ISSUER:-http://$(HOST):$(PORT)} $(BIN)/iod serve --host $(HOST) --port $(PORT)

## ruff, mypy --strict, then pytest (PostgreSQL too when IOD_TEST_DATABASE_URL is set, or
## in a throwaway database, dropped after, when a local PostgreSQL answers: tests/local_postgres.py).
test: $(STAMP) lint typecheck pytest

lint: $(STAMP)
	$(BIN)/ruff check src clients tests
	$(BIN)/ruff format --check src clients tests

typecheck: $(STAMP)
	$(BIN)/mypy --strict src clients/python/src

## Two passes (tests/two_passes.py): the tests that may share the machine on PYTEST_WORKERS
## xdist workers, then the `serial` ones alone (data plane, faults, timing-sensitive).
## The sources are byte-compiled first: where PYTHONDONTWRITEBYTECODE is set (as in the CI
## VM's shell), each of the hundreds of `iod` processes the tests start would compile them again
## (about 0.4 s of CPU each); compileall writes the .pyc files whatever that says.
PYTEST_WORKERS ?= 2
pytest: $(STAMP)
	$(BIN)/python -m compileall -q src clients/python/src tests
	PYTEST_WORKERS=$(PYTEST_WORKERS) $(BIN)/python -m tests.local_postgres -- \
	  $(BIN)/python -m tests.two_passes $(PYTEST_ARGS)

## Fuzzing, longer than `make test` runs it: schemathesis with every phase (stateful too)
## against a served process's own /openapi.json, at least FUZZ_MIN_CASES generated cases and
## zero failures; then the hypothesis fuzz tests of the bandwidth and date-time parsers with
## FUZZ_EXAMPLES examples each (and PUT bandwidth through the app with FUZZ_API_EXAMPLES);
## then the unit property tests with their thorough counts (THOROUGH_TESTS).
FUZZ_SCHEMATHESIS_EXAMPLES ?= 1000
FUZZ_MIN_CASES ?= 10000
FUZZ_EXAMPLES ?= 20000
FUZZ_API_EXAMPLES ?= 2000
# Property tests that run 100 examples each in `make test` and their own larger counts here
# (thorough(N) in tests/conftest.py).
THOROUGH_TESTS := $(addprefix tests/unit/,test_backoff.py test_bandwidth.py \
  test_capacity_tiers.py test_ids.py test_status.py test_tokens.py)
fuzz: $(STAMP)
	IOD_SCHEMATHESIS_MAX_EXAMPLES=$(FUZZ_SCHEMATHESIS_EXAMPLES) IOD_FUZZ_MIN_CASES=$(FUZZ_MIN_CASES) \
	  $(BIN)/pytest tests/e2e/test_conformance.py -k servers_own_openapi -p no:randomly -s \
	  --timeout 7200 $(PYTEST_ARGS)
	IOD_HYPOTHESIS_PROFILE=fuzz IOD_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
	  IOD_FUZZ_API_EXAMPLES=$(FUZZ_API_EXAMPLES) \
	  $(BIN)/pytest tests/unit/test_fuzz.py tests/api/test_fuzz_api.py -p no:randomly \
	  --hypothesis-show-statistics --timeout 7200 $(PYTEST_ARGS)
	IOD_HYPOTHESIS_PROFILE=thorough $(BIN)/pytest -n $(PYTEST_WORKERS) $(THOROUGH_TESTS) \
	  -p no:randomly --timeout 7200 $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .iod .iod-linux .pytest_cache .mypy_cache .ruff_cache

## Benchmark: the service against a bare Starlette baseline, measured with wrk on 127.0.0.1
## (docs/performance.md). bench: every row, under 10 minutes; bench-quick: one row of each
## kind, about a minute. PostgreSQL: IOD_BENCH_DATABASE_URL, default the local iod_bench
## (and <its name>_webhooks for the webhook deliveries row, wiped).
## Extra options: BENCH_ARGS="--profile /tmp/iod-profile --json /tmp/bench.json".
.PHONY: bench bench-quick bench-wrk
bench: $(STAMP) bench-wrk
	$(BIN)/python bench/run.py $(BENCH_ARGS)

bench-quick: $(STAMP) bench-wrk
	$(BIN)/python bench/run.py --quick $(BENCH_ARGS)

# wrk is a Debian package: installed here when missing and apt-get is available.
bench-wrk:
	@command -v wrk >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "install wrk (Debian/Ubuntu package wrk)"; exit 1; }; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq wrk; }

## Burst: 10,000 changes due at one instant, 2 worker processes on PostgreSQL, then the lag of
## single changes at a steady 100/s. IOD_BURST_DATABASE_URL (default the local
## iod_bench_burst, dropped and created anew).
.PHONY: bench-burst crash-test test-faults
bench-burst: $(STAMP)
	$(BIN)/python bench/burst.py $(BURST_ARGS)

## Surge (issue 14): 1,000 clients with credentials of their own, each a token then a bandwidth
## change, at once, against 2 API processes and 1 worker on PostgreSQL.
## IOD_SURGE_DATABASE_URL (default the local iod_bench_surge, created anew and dropped).
.PHONY: bench-surge
bench-surge: $(STAMP)
	$(BIN)/python bench/surge.py $(SURGE_ARGS)

## Planning 48 h of schedules for N connections with one planner (docs/performance.md,
## "Schedules"). WIPES the PostgreSQL database IOD_BENCH_SCHEDULES_DATABASE_URL (give your own).
## BENCH_SCHEDULES_ARGS="-n 100000".
.PHONY: bench-schedules
bench-schedules: $(STAMP)
	$(BIN)/python bench/schedules.py $(BENCH_SCHEDULES_ARGS)

## The Linux data plane (root): its tests with the measured figures printed, and the scale
## benchmark (1,000 connections on this host; docs/performance.md). iperf3 is installed when
## missing and apt-get is available.
.PHONY: test-dataplane bench-dataplane iperf3
test-dataplane: $(STAMP) iperf3
	IOD_REQUIRE_DATAPLANE=1 $(BIN)/pytest tests/dataplane -v -s $(PYTEST_ARGS)

bench-dataplane: $(STAMP)
	$(BIN)/python bench/dataplane.py $(DATAPLANE_ARGS)
	$(BIN)/python bench/dataplane_edge.py $(EDGE_DATAPLANE_ARGS)

iperf3:
	@command -v iperf3 >/dev/null 2>&1 || { \
	  command -v apt-get >/dev/null 2>&1 || { echo "install iperf3 (Debian/Ubuntu package iperf3)"; exit 1; }; \
	  SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq iperf3; }

## The crash test at the issue's size (make test runs it small): needs IOD_TEST_DATABASE_URL.
crash-test: $(STAMP)
	IOD_CRASH_CONNECTIONS=500 IOD_CRASH_CHANGES=2000 $(BIN)/pytest tests/e2e/test_crash.py -v

## The fault tests at full size (make test runs them short): PostgreSQL restarted under load,
## the API and workers killed with SIGKILL, SIGTERM drains (docs/reliability.md). Needs
## IOD_TEST_DATABASE_URL on a local cluster it may restart (as root); prints FAULTS lines.
test-faults: $(STAMP)
	IOD_FAULTS_LONG=1 IOD_TEST_RESTART_POSTGRES=1 $(BIN)/pytest tests/faults -v -s -p no:randomly $(PYTEST_ARGS)

## Webhooks: deliveries per second to a local receiver, 2 workers on PostgreSQL
## (bench/webhooks.py; IOD_BENCH_DATABASE_URL, default the local iod_bench, is wiped; also
## a row of `make bench`). BENCH_ARGS="-n 2000 --profile DIR": py-spy stacks of each worker.
.PHONY: bench-webhooks
bench-webhooks: $(STAMP)
	$(BIN)/python bench/webhooks.py $(BENCH_ARGS)

## Money (issue 15): rate one hour of 100,000 connections and a 10,000-connection customer's
## month on PostgreSQL (IOD_BENCH_DATABASE_URL, its schema dropped and made anew;
## docs/performance.md, "Metering"). METERING_ARGS="N C" for other sizes.
.PHONY: bench-metering
bench-metering: $(STAMP)
	$(BIN)/python bench/metering.py $(METERING_ARGS)
