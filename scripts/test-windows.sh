#!/usr/bin/env bash
# `make test-windows`: the workspace's tests cross-compiled for x86_64-pc-windows-gnu with
# mingw-w64 and run under Wine, two test binaries at a time, each under a time limit.
#
#   scripts/test-windows.sh [CARGO ARGS] [-- TEST ARGS]
#       e.g. `--test watch_stories`, `-p sim`, `--test tunnel -- quick_mode`
#
# Installs what is missing (Debian/Ubuntu: gcc-mingw-w64-x86-64, wine and wine64 with apt-get;
# the Rust target with rustup), and keeps its Wine prefix in target/wine/prefix with the
# ProcessPrng shim (scripts/wine/bcryptprimitives.c: Wine 8.0 lacks it and Rust std needs it).
# Two test binaries at a time, the slowest first (PARALLEL_BINARIES=1 for one at a time),
# each under Wine from its package's folder, as cargo's runner for the target would run it. Prints a line per test binary (wall time, counts) and then
# the totals on a line of their own, `windows: N passed, N failed, N ignored`; exits non-zero
# when a test failed or a test binary crashed or hung. Wine does not model everything Windows does: CONTRIBUTING.md,
# "Windows and macOS", says what, and where those semantics are tested instead.
set -euo pipefail
cd "$(dirname "$0")/.."

TRIPLE=x86_64-pc-windows-gnu
CARGO=${CARGO:-cargo}
# A test binary that runs longer than this is taken for a hung Wine and killed. The slowest
# binary takes about a minute under Wine on a 2-core machine.
PER_BINARY_SECS=${PER_BINARY_SECS:-600}
# Four tests at a time in each binary, not one per core: under Wine most of a test's time is
# spent waiting (postflow's settle time, the simulator's deadlines, Wine's process start).
export RUST_TEST_THREADS=${RUST_TEST_THREADS:-4}
# Two binaries at a time: measured 450 s of tests against 710 s for one at a time, on a
# 2-core machine others were building on (load about 8 and 12: a rough comparison). Once, one at a time was the rule because a
# test restarting postflow after kill -9 on the same free port raced the other binary for it
# and hung; the harness now takes such ports outside the ephemeral ranges
# (tests/common/mod.rs, free_port), and a postflow that exits fails its test at once.
PARALLEL_BINARIES=${PARALLEL_BINARIES:-2}
# The test binaries that took longest under Wine when last measured, longest first: they start
# first. Only the order: every binary runs, named here or not.
SLOWEST_FIRST=${SLOWEST_FIRST:-upload_slow upload_bulk frameio_api upload_faults stack_stories postflow upload_crash serve_front tunnel}
WINE_DIR=$PWD/target/wine
export WINEPREFIX=$WINE_DIR/prefix
export WINEDEBUG=-all
# No Mono or Gecko download prompts from a headless wineboot: the tests need neither.
export WINEDLLOVERRIDES="mscoree=;mshtml="

die() {
    echo "test-windows: $*" >&2
    exit 1
}

# ------------------------------------------------------------------ one test binary
# Runs one test binary under Wine with a time limit, from its package's folder (as cargo
# would), shows its output, and records its wall time, exit code and counts. Also usable as
# cargo's runner: CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER="scripts/test-windows.sh run-one".
run_one() {
    local exe=$1
    shift
    local name out rc=0 start elapsed
    name=$(basename "$exe" .exe)
    name=${name%-*} # cargo's hash
    out=$(mktemp)
    start=$EPOCHREALTIME
    # Output into a file, not a pipe: a postflow.exe left behind by a failed test would hold
    # a pipe open and hang the reader.
    timeout --kill-after=15 "$PER_BINARY_SECS" wine "$exe" "$@" >"$out" 2>&1 || rc=$?
    elapsed=$(awk -v a="$start" -v b="$EPOCHREALTIME" 'BEGIN { print b - a }')
    # One block per binary, after it ends, so that two binaries' outputs do not mix.
    echo "     Ran $exe under Wine"
    cat "$out"
    local passed=0 failed=0 ignored=0
    # `test result: ok. 12 passed; 0 failed; 1 ignored; 0 measured; 0 filtered out; ...`
    read -r passed failed ignored < <(awk '/^test result:/ {
        for (i = 1; i <= NF; i++) {
            if ($(i+1) ~ /^passed;/) p += $i
            if ($(i+1) ~ /^failed;/) f += $i
            if ($(i+1) ~ /^ignored;/) g += $i
        } } END { print p + 0, f + 0, g + 0 }' "$out")
    rm -f "$out"
    local verdict=ok
    if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
        # What it started may still run in the prefix: `run_all` kills all of that at the end
        # (not here, where it would kill the binary running beside this one).
        verdict="hung (killed after ${PER_BINARY_SECS}s)"
    elif [ "$rc" != 0 ] && [ "$failed" = 0 ]; then
        verdict="crashed (exit $rc)"
    elif [ "$rc" != 0 ]; then
        verdict=failed
    fi
    printf '%s\t%s\t%s\t%s\t%.1f\t%s\n' "$name" "$passed" "$failed" "$ignored" "$elapsed" \
        "$verdict" >>"$POSTFLOW_WINE_RESULTS"
    return "$rc"
}

# `DIR<TAB>EXE`: one line of the list `run_all` makes.
run_in() {
    local dir=${1%%$'\t'*} exe=${1#*$'\t'}
    shift
    cd "$dir" && run_one "$exe" "$@"
}

# ------------------------------------------------------------------ the tools
apt_install() {
    command -v apt-get >/dev/null ||
        die "$* missing and no apt-get here: install mingw-w64 and Wine (64-bit) by hand"
    local sudo=
    [ "$(id -u)" = 0 ] || sudo=sudo
    echo "test-windows: installing $* with apt-get" >&2
    $sudo apt-get update -q >&2 || die "apt-get update failed"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -q -y --no-install-recommends "$@" >&2 ||
        die "apt-get install $* failed"
}

tools() {
    command -v x86_64-w64-mingw32-gcc >/dev/null || apt_install gcc-mingw-w64-x86-64
    # Debian's `wine64` is the 64-bit loader; `wine` the command that starts it.
    command -v wine >/dev/null || apt_install wine wine64
    command -v timeout >/dev/null || die "timeout (coreutils) not found"
    command -v "$CARGO" >/dev/null || die "$CARGO not found; install Rust from rustup.rs"
    if [ ! -d "$(rustc --print sysroot)/lib/rustlib/$TRIPLE/lib" ]; then
        command -v rustup >/dev/null || die "the Rust std for $TRIPLE is missing and rustup is not here"
        rustup target add "$TRIPLE" >&2 || die "rustup target add $TRIPLE failed"
    fi
}

# The prefix under target/, created once; the shim rebuilt when its source changes.
prefix() {
    mkdir -p "$WINE_DIR"
    if [ ! -f "$WINEPREFIX/system.reg" ]; then
        echo "test-windows: creating the Wine prefix $WINEPREFIX (once, about a minute)" >&2
        wineboot -i >/dev/null 2>&1 || die "wineboot -i failed for $WINEPREFIX"
        wineserver -w
    fi
    local src=scripts/wine/bcryptprimitives.c dll=$WINE_DIR/bcryptprimitives.dll
    if [ ! -f "$dll" ] || [ "$src" -nt "$dll" ]; then
        x86_64-w64-mingw32-gcc -shared -O2 -o "$dll" "$src" ||
            die "cannot build the ProcessPrng shim from $src"
    fi
    cp "$dll" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"
}

# ------------------------------------------------------------------ everything
run_all() {
    tools
    prefix
    # One wineserver for the whole run (not one per binary), stopped at the end whatever
    # happens, with anything a test left running in the prefix.
    wineserver -p
    trap 'wineserver -k 2>/dev/null || true' EXIT

    # The sim binaries first: tests on Windows use them from beside postflow.exe
    # (tests/common/sim_bins.rs), since a Wine process cannot wait for a cargo it starts.
    "$CARGO" build --workspace --bins --target "$TRIPLE" || die "cargo build for $TRIPLE failed"
    # Arguments before `--` choose test binaries (cargo's), after it tests (the binaries').
    local cargo_args=() test_args=()
    while [ $# -gt 0 ] && [ "$1" != -- ]; do
        cargo_args+=("$1")
        shift
    done
    [ $# -gt 0 ] && shift && test_args=("$@")
    local list
    list=$(mktemp)
    # Each test binary with its package's folder, from cargo's own list; the slowest first
    # (SLOWEST_FIRST), so that the binaries running beside them fill the time they take.
    "$CARGO" test --workspace --target "$TRIPLE" --no-run --message-format=json \
        "${cargo_args[@]}" | python3 -c '
import json, os, sys
slowest = sys.argv[1].split()
rows = []
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("profile", {}).get("test") \
            and m.get("executable"):
        name = os.path.basename(m["executable"]).rsplit("-", 1)[0]
        rank = slowest.index(name) if name in slowest else len(slowest)
        rows.append((rank, os.path.dirname(m["manifest_path"]) + "\t" + m["executable"]))
for _, row in sorted(rows, key=lambda r: r[0]):
    print(row)
' "$SLOWEST_FIRST" >"$list" || die "the tests do not compile for $TRIPLE"

    POSTFLOW_WINE_RESULTS=$(mktemp)
    export POSTFLOW_WINE_RESULTS
    local status=0
    xargs -d '\n' -P "$PARALLEL_BINARIES" -I{} "$PWD/scripts/test-windows.sh" run-in {} \
        "${test_args[@]}" <"$list" || status=$?
    rm -f "$list"

    echo
    echo "test-windows: per test binary under Wine (passed, failed, ignored, wall time):"
    sort "$POSTFLOW_WINE_RESULTS" |
        awk -F'\t' '{ printf "  %-28s %4d %4d %4d %7.1fs  %s\n", $1, $2, $3, $4, $5, $6 }'
    local totals
    totals=$(awk -F'\t' '
        { p += $2; f += $3; g += $4; if ($6 != "ok" && $6 != "failed") bad++ }
        END {
            line = sprintf("windows: %d passed, %d failed, %d ignored", p, f, g)
            if (bad) line = line sprintf(", %d test binaries crashed or hung", bad)
            print line
        }' "$POSTFLOW_WINE_RESULTS")
    local bad
    bad=$(awk -F'\t' '$3 > 0 || ($6 != "ok" && $6 != "failed") { n++ } END { print n + 0 }' \
        "$POSTFLOW_WINE_RESULTS")
    rm -f "$POSTFLOW_WINE_RESULTS"
    echo "$totals"
    if [ "$bad" != 0 ] || [ "$status" != 0 ]; then
        exit 1
    fi
}

case "${1:-}" in
run-one)
    shift
    run_one "$@"
    ;;
run-in)
    shift
    run_in "$@"
    ;;
*) run_all "$@" ;;
esac
