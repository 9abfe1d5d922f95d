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

.PHONY: help run test grpc-check lint fmt build migrate-up migrate-down banker db-start db-stop db-url db-ready toolchain

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-14s %s\n", $$1, $$2}'

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

lint: toolchain ## formatting check and clippy with warnings as errors
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt: toolchain ## format the code
	$(CARGO) fmt --all

build: ## release build of the simplebank binary
	$(CARGO) build --locked --release

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
