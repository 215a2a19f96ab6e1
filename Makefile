# hawker: `make run` to start a development server, `make test` to run every test.
SHELL := /bin/bash
CARGO ?= cargo
export HAWKER_CONFIG_DIR := $(CURDIR)/config

.PHONY: run demo test test-cluster lint fmt clippy services migrate seed openapi openapi-check schemathesis clean-test-dbs precommit

## Start PostgreSQL and Redis if needed, migrate, and serve on 127.0.0.1:8080 (admin :9090).
run: services
	$(CARGO) build --bin hawker
	HAWKER_ENV=development $(CARGO) run --quiet --bin hawker -- migrate
	HAWKER_ENV=development $(CARGO) run --quiet --bin hawker -- serve

## Seed demo data into the development database.
seed: services
	HAWKER_ENV=development $(CARGO) run --quiet --bin hawker -- seed

demo: seed run

migrate: services
	HAWKER_ENV=development $(CARGO) run --quiet --bin hawker -- migrate

services:
	@bash scripts/services.sh

## Every test of the workspace, against the real PostgreSQL and Redis.
## RUST_BACKTRACE=0: a failing test prints where it panicked and why in a few
## lines (a backtrace would push the message out of a CI log's tail).
test: services clean-test-dbs
	RUST_BACKTRACE=0 $(CARGO) test --workspace --all-targets -- --test-threads 5
	$(MAKE) --no-print-directory test-cluster
	$(MAKE) --no-print-directory openapi-check
	$(MAKE) --no-print-directory schemathesis

## The hub and commerce suites again, against a local Redis Cluster (3 masters
## + 3 replicas on 127.0.0.1:7000-7005, started by `scripts/services.sh cluster`).
## Tests that bring their own Redis (a private server they stop) keep it.
CLUSTER_SEEDS := redis://127.0.0.1:7000,redis://127.0.0.1:7001,redis://127.0.0.1:7002
CLUSTER_SUITES := hub:: hub_security:: socket_conformance:: notices:: commerce:: coupons:: \
	waitlists:: group_buys:: auctions:: comment_to_buy::
test-cluster:
	@bash scripts/services.sh cluster
	HAWKER_TEST_REDIS_CLUSTER=$(CLUSTER_SEEDS) RUST_BACKTRACE=0 $(CARGO) test -p hawker-server --test it -- \
		--test-threads 5 $(CLUSTER_SUITES)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	python3 scripts/module_cycles.py

fmt:
	$(CARGO) fmt --all

precommit: fmt lint test

## Print the OpenAPI document into docs/openapi.json.
openapi:
	$(CARGO) run --quiet --bin hawker -- openapi > docs/openapi.json

## Validate the OpenAPI document with an independent validator (openapi-spec-validator),
## and check that the committed docs/openapi.json is the one the server serves.
openapi-check:
	@test -x target/pyenv/bin/python || python3 -m venv target/pyenv
	@target/pyenv/bin/python -c "import openapi_spec_validator" 2>/dev/null \
	  || target/pyenv/bin/pip install --quiet openapi-spec-validator
	$(CARGO) run --quiet --bin hawker -- openapi > target/openapi.json
	target/pyenv/bin/python -m openapi_spec_validator target/openapi.json
	@cmp -s target/openapi.json docs/openapi.json \
	  || { echo "docs/openapi.json is not what the server serves: run make openapi"; exit 1; }

## Fuzz a real server against its OpenAPI document (schemathesis, every check,
## as a viewer, an agency and an admin; scripts/schemathesis.sh). Zero failures.
schemathesis: services
	bash scripts/schemathesis.sh

## Drop databases left by earlier test runs.
clean-test-dbs:
	@psql -h 127.0.0.1 -U postgres -Atc "select datname from pg_database where datname like 'hawker_test_%' or datname like 'hawker_schemathesis_%'" 2>/dev/null \
	  | while read -r db; do psql -h 127.0.0.1 -U postgres -qc "drop database if exists \"$$db\"" >/dev/null 2>&1 || true; done

## Fan-out load test (loadtest/README.md): hub on CPU 0, generator on CPU 1; a
## 200-viewer smoke run unless LOADTEST_ARGS says otherwise. Results: loadtest/results/
## (created by the tool, ignored by git; runs worth keeping go to docs/benchmarks/).
LOADTEST_ARGS ?= --scenario smoke --viewers 200 --duration 10 --host-rate 10 --chat-rate 5 --chatters 5
.PHONY: loadtest
loadtest: services
	$(CARGO) build --release -p hawker-loadtest -p hawker-server
	taskset -c 1 $${CARGO_TARGET_DIR:-target}/release/hawker-loadtest fanout --spawn 1 --server-cpus 0 \
	  --hawker-bin $${CARGO_TARGET_DIR:-target}/release/hawker $(LOADTEST_ARGS)

## The web console's end-to-end test in headless Chromium (e2e/run.sh installs
## chromium and e2e/node_modules when missing); screenshots in docs/screenshots/.
.PHONY: test-e2e
test-e2e:
	bash e2e/run.sh
