# The quick start is two commands: `make run` and `make test`. Both install what is
# missing first (scripts/install-deps.sh, quiet when all is there), then build.

CARGO ?= cargo
# Where cargo puts binaries: honours CARGO_TARGET_DIR like cargo does.
TARGET_DIR ?= $(or $(CARGO_TARGET_DIR),target)

.PHONY: run test build deps lint clean

## Start the control plane on the embedded default, in the foreground.
run: build
	$(TARGET_DIR)/debug/sovdb serve

## Run every test.
test: deps
	scripts/test.sh

build: deps
	$(CARGO) build --locked --bin sovdb

deps:
	@scripts/install-deps.sh

## Formatting and lints, as CI checks them.
lint: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

clean:
	$(CARGO) clean
