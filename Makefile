# postflow: common tasks. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo

.PHONY: build release test test-browser lint run clean bench demo soak soak-ci

# Everything on this machine: the Frame.io simulator, the cloudflared stand-in and postflow,
# with generated media dropped into demo/inbox. Prints the dashboard URL; Ctrl-C stops it.
demo:
	CARGO=$(CARGO) scripts/demo.sh

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release
	@ls -l target/release/postflow

test:
	$(CARGO) test --workspace

# Headless Chromium loads the page while a job runs (installs chromium when missing) and
# saves docs/screenshot.png for the README.
test-browser:
	CARGO=$(CARGO) tests/browser/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

run: build
	$(CARGO) run -- run config.json

# The soak (bench/soak.rs): 500 files through the simulator under faults, postflow kill -9'ed
# and restarted as cron would; one summary line, non-zero exit if anything is wrong.
soak:
	$(CARGO) build --release --workspace --bins --examples
	$(CARGO) run --release --example soak -- --files 500

# CI's soak: 60 files, debug build (what `make test` already built), a few minutes.
soak-ci:
	$(CARGO) build --workspace --bins --examples
	$(CARGO) run --example soak -- --files 60

# Benchmarks: serve (ratio to nginx), scan, ledger, idle CPU, startup, binary size, and a
# card offload of 300 clips into one folder against Frame.io's rate limits (bench/bulk).
# BENCHMARKS.md records the last figures. Run on a quiet machine.
bench:
	$(CARGO) build --release --workspace --bins --examples
	$(CARGO) bench --bench ledger
	$(CARGO) bench --bench scan
	bench/serve
	bench/process.sh
	bench/bulk --files 300

clean:
	$(CARGO) clean
