# postflow: common tasks. `make test` is what CI runs (through .ci/run).
CARGO ?= cargo

.PHONY: build release dist check-macos test test-durability test-windows test-browser screenshots lint run clean bench demo soak soak-ci

# Everything on this machine: the Frame.io simulator, the cloudflared stand-in and postflow
# serving two projects, with generated media dropped into both folders under demo/inbox.
# Prints the dashboard URL; Ctrl-C stops it.
demo:
	CARGO=$(CARGO) scripts/demo.sh

build:
	$(CARGO) build --workspace

release:
	$(CARGO) build --release
	@ls -l target/release/postflow

# The release tarball dist/postflow-VERSION-x86_64-linux.tar.gz and its .sha256: a binary
# that starts on glibc 2.17 or newer (cargo-zigbuild; zig and it come from PyPI into
# target/dist-tools), checked for its glibc symbol versions and size. Not part of `make test`:
# a few minutes, and PyPI the first time.
dist:
	CARGO=$(CARGO) scripts/dist.sh

# Clippy for both Apple targets (x86_64 and aarch64) with zig as the C compiler: the Mac build compiles, nothing
# more (linking needs Apple's SDK). Same tools as `make dist`.
check-macos:
	CARGO=$(CARGO) scripts/dist.sh check-macos

# With cargo-nextest (CI machines have it) the tests of every binary run at once
# (.config/nextest.toml), then the doc tests, which nextest does not run; without it, `cargo
# test --workspace`, one binary after another. Either way, any failing test fails it.
test:
	@if $(CARGO) nextest --version >/dev/null 2>&1; then \
		echo "$(CARGO) nextest run --workspace && $(CARGO) test --workspace --doc"; \
		$(CARGO) nextest run --workspace && $(CARGO) test --workspace --doc; \
	else \
		echo "$(CARGO) test --workspace (cargo-nextest not installed)"; \
		$(CARGO) test --workspace; \
	fi

# The state dir full, freed and read-only under a running postflow (tests/durability.rs): a
# tmpfs in a private mount namespace, so root and unshare are needed. Fails, never skips,
# where they are missing: these tests must not count as passed without running.
test-durability:
	@if [ "$$(id -u)" != 0 ]; then echo "test-durability: needs root (mounts a tmpfs)" >&2; exit 1; fi
	@unshare --mount --propagation private true || { echo "test-durability: unshare --mount does not work here" >&2; exit 1; }
	$(CARGO) test --test durability -- --ignored

# The same tests cross-compiled for Windows (mingw-w64) and run under Wine, two binaries at
# a time, each with a time limit; installs mingw-w64 and Wine when missing, keeps its Wine prefix in
# target/wine. Ends with `windows: N passed, N failed, N ignored`. CONTRIBUTING.md says what
# Wine does not model.
test-windows:
	CARGO=$(CARGO) scripts/test-windows.sh

# Headless Chromium loads the page while a job runs (installs chromium when missing); its
# screenshot goes to target/tmp/browser-test.png, never into the tree.
test-browser:
	CARGO=$(CARGO) tests/browser/run.sh browser

# The README's picture, docs/screenshot.png, from a real run of the binary against the
# simulator (tests/browser/screenshots.rs): Chromium as for test-browser, and `unshare` to show
# a studio's watch folder. A couple of minutes. Look at the picture before committing it.
screenshots:
	CARGO=$(CARGO) tests/browser/run.sh screenshots

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

# Benchmarks: serve (ratio to nginx), scan, ledger, idle CPU, startup, binary size, both
# listeners under slowhttptest/h2load/ab (bench/attack), and a card offload of 300 clips into
# one folder against Frame.io's rate limits (bench/bulk).
# BENCHMARKS.md records the last figures. Run on a quiet machine.
bench:
	$(CARGO) build --release --workspace --bins --examples
	$(CARGO) bench --bench ledger
	$(CARGO) bench --bench history
	$(CARGO) bench --bench scan
	bench/serve
	bench/process.sh
	bench/attack
	bench/bulk --files 300

clean:
	$(CARGO) clean
	rm -rf dist
