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

bench:
	$(CARGO) bench --bench ledger
	$(CARGO) bench --bench scan

clean:
	$(CARGO) clean
