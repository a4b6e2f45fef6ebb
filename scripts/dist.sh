#!/usr/bin/env bash
# `make dist`: the release tarball a studio copies to any Linux ingest machine.
#
#   scripts/dist.sh                     build, check and package into dist/
#   scripts/dist.sh package BINARY DIR  only package an already built BINARY into DIR
#   scripts/dist.sh check-macos         clippy for x86_64-apple-darwin (compiles, cannot link)
#
# The binary is built with cargo-zigbuild against glibc 2.17 (CentOS 7; everything newer runs
# it too), because a plain `cargo build --release` links against this machine's glibc and
# then refuses to start on Debian 11, Ubuntu 20.04 or RHEL 8. Zig and cargo-zigbuild come
# from PyPI into a virtualenv under target/, so a fresh machine needs only Rust, python3 (with
# venv) and network access to PyPI once.
set -euo pipefail
# Paths on the command line are the caller's; the script itself works from the repository.
caller=$PWD
cd "$(dirname "$0")/.."

TRIPLE=x86_64-unknown-linux-gnu
GLIBC=2.17
MAX_BYTES=$((6 * 1024 * 1024))
# Pinned so that two releases of the same commit are built by the same toolchain.
TOOLS="ziglang==0.17.1 cargo-zigbuild==0.24.1"
VENV=target/dist-tools/venv
CARGO=${CARGO:-cargo}

# A path as the caller meant it, from the directory the script was started in.
from_caller() {
    case "$1" in
    /*) echo "$1" ;;
    *) echo "$caller/$1" ;;
    esac
}

die() {
    echo "dist: $*" >&2
    exit 1
}

# The tarball: postflow-VERSION-x86_64-linux/ holding the binary, README.md, config.json,
# LICENSE, contrib/ and docs/ (the manual the README links to), and beside it a .sha256 that `sha256sum -c` accepts. The version is
# the one the binary itself prints. Owners, order and times are fixed (the commit's time, or
# the binary's outside git), so packaging the same binary twice gives the same bytes.
package() {
    local binary=$1 out=$2
    [ -x "$binary" ] || die "no executable binary at $binary"
    local version
    version=$("$binary" --version 2>/dev/null | awk '$1 == "postflow" {print $2}') || true
    [ -n "$version" ] || die "$binary --version does not print \`postflow VERSION ...\`"
    local name="postflow-$version-x86_64-linux"
    stage=$(mktemp -d)
    trap 'rm -rf "$stage"' EXIT
    mkdir "$stage/$name"
    install -m 0755 "$binary" "$stage/$name/postflow"
    cp README.md config.json LICENSE "$stage/$name/"
    cp -R contrib "$stage/$name/contrib"
    cp -R docs "$stage/$name/docs"
    chmod -R u=rwX,go=rX "$stage/$name"

    local mtime
    mtime=$(git log -1 --format=%ct 2>/dev/null || stat -c %Y "$binary")
    mkdir -p "$out"
    tar --create --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
        --directory="$stage" "$name" | gzip -n -9 >"$out/$name.tar.gz"
    (cd "$out" && sha256sum "$name.tar.gz" >"$name.tar.gz.sha256")
    echo "$out/$name.tar.gz"
}

# cargo-zigbuild and zig in target/dist-tools/venv, installed when missing or not the pinned
# versions. Prints the venv's bin directory.
tools() {
    if ! have_tools; then
        echo "dist: installing $TOOLS into $VENV (from PyPI, once)" >&2
        command -v python3 >/dev/null ||
            die "python3 not found; it installs zig and cargo-zigbuild (Debian/Ubuntu: apt-get install python3 python3-venv)"
        rm -rf "$VENV"
        python3 -m venv "$VENV" >&2 ||
            die "python3 cannot create a virtualenv (Debian/Ubuntu: apt-get install python3-venv)"
        # shellcheck disable=SC2086 # TOOLS is a list of requirements
        "$VENV/bin/pip" install --quiet $TOOLS >&2 ||
            die "cannot install $TOOLS from PyPI (no network?); see the messages above"
        have_tools || die "$VENV does not hold $TOOLS after installing; remove it and try again"
    fi
    echo "$VENV/bin"
}

have_tools() {
    local frozen wanted
    frozen=$("$VENV/bin/pip" freeze 2>/dev/null) || return 1
    for wanted in $TOOLS; do
        grep -qxF "$wanted" <<<"$frozen" || return 1
    done
}

build() {
    [ "$(uname -sm)" = "Linux x86_64" ] ||
        die "the release tarball is built on x86_64 Linux; this machine is $(uname -sm)"
    command -v "$CARGO" >/dev/null || die "$CARGO not found; install Rust from rustup.rs"
    # zigbuild compiles for the host triple; only the glibc it links against changes.
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$TRIPLE"; then
        rustup target add "$TRIPLE" >&2 || die "the Rust target $TRIPLE is missing and cannot be added"
    fi
    if [ -n "$(git status --porcelain 2>/dev/null)" ]; then
        echo "dist: warning: the work tree has uncommitted changes; the binary will name" \
            "commit $(git rev-parse --short=7 HEAD) but hold more" >&2
    fi

    local bin
    bin=$(tools)
    # cargo-zigbuild finds zig as `python3 -m ziglang`, the venv's python3 first on PATH.
    PATH="$PWD/$bin:$PATH" "$CARGO" zigbuild --release --locked -p postflow --bin postflow \
        --target "$TRIPLE.$GLIBC" || die "cargo zigbuild failed"
    local binary="target/$TRIPLE/release/postflow"

    scripts/check-glibc.sh "$binary" "$GLIBC" || die "the binary would not start on glibc $GLIBC"
    local bytes
    bytes=$(stat -c %s "$binary")
    [ "$bytes" -le "$MAX_BYTES" ] ||
        die "the binary is $bytes bytes, over the 6 MB limit (is the release profile intact?)"
    echo "dist: $binary is $bytes bytes; it prints: $("$binary" --version)"
    local tarball
    tarball=$(package "$binary" dist)
    echo "dist: $tarball"
    echo "dist: $(cat "$tarball.sha256")"
}

# Whether the code still compiles for a Mac, from Linux: zig stands in for the C compiler that
# ring's build script needs, and clippy never links (linking needs Apple's SDK, which
# cannot be had here), so this checks the Rust code and cfg(unix) gates, not a binary.
check_macos() {
    local mac=x86_64-apple-darwin
    if ! rustup target list --installed | grep -qx "$mac"; then
        rustup target add "$mac" >&2 || die "the Rust target $mac is missing and cannot be added"
    fi
    local bin
    bin=$(tools)
    PATH="$PWD/$bin:$PATH" cargo-zigbuild clippy --locked --workspace --all-targets \
        --target "$mac" -- -D warnings || die "clippy for $mac failed"
    echo "dist: the workspace compiles for $mac without warnings (not linked, not run)"
}

case "${1:-}" in
"") build ;;
check-macos) check_macos ;;
package)
    [ $# = 3 ] || die "usage: scripts/dist.sh package BINARY DIR"
    package "$(from_caller "$2")" "$(from_caller "$3")"
    ;;
*) die "usage: scripts/dist.sh [package BINARY DIR | check-macos]" ;;
esac
