# postflow: common tasks. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo

.PHONY: build release test lint run clean bench

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release
	@ls -l target/release/postflow

test:
	$(CARGO) test --workspace

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

run: build
	$(CARGO) run -- run config.json

bench:
	$(CARGO) bench --bench ledger
	$(CARGO) bench --bench scan

clean:
	$(CARGO) clean
