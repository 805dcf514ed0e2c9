# The quick start is two commands: `make run` and `make test`. Both install what is
# missing first (scripts/install-deps.sh, quiet when all is there: `make run` what running
# needs, `make test` that and what only the tests need), then build.

CARGO ?= cargo
# Where cargo puts binaries: honours CARGO_TARGET_DIR like cargo does.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: run test build deps test-deps lint clean

## Start the control plane on the embedded default, in the foreground.
run: build
	$(TARGET_DIR)/debug/sovdb serve

## Run every test.
test: test-deps
	scripts/test.sh

build: deps
	$(CARGO) build --locked --bin sovdb

## What building and running need (the engines' packages among them).
deps:
	@scripts/install-deps.sh run

## What running and testing need.
test-deps:
	@scripts/install-deps.sh run test

## Formatting and lints, as CI checks them.
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

clean:
	$(CARGO) clean
