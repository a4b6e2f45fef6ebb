#!/usr/bin/env bash
# `make dist`: the release tarball a studio copies to any Linux ingest machine, and the zip
# for a Windows one.
#
#   scripts/dist.sh                             build, check and package both into dist/
#   scripts/dist.sh package BINARY DIR          only package an already built BINARY into DIR
#   scripts/dist.sh windows                     build, check and package only the Windows zip
#   scripts/dist.sh package-windows EXE DIR     only package an already built postflow.exe
#   scripts/dist.sh check-macos                 clippy for both Apple targets (compiles, cannot link)
#
# The binary is built with cargo-zigbuild against glibc 2.17 (CentOS 7; everything newer runs
# it too), because a plain `cargo build --release` links against this machine's glibc and
# then refuses to start on Debian 11, Ubuntu 20.04 or RHEL 8. Zig and cargo-zigbuild come
# from PyPI into a virtualenv under target/, so a fresh machine needs only Rust, python3 (with
# venv) and network access to PyPI once.
#
# postflow.exe is cross-built with mingw-w64 (x86_64-pc-windows-gnu), and run once under Wine
# to ask its version, as the tarball's binary is (`make test-windows` sets up mingw-w64, Wine
# and the Wine prefix this uses).
set -euo pipefail
# Paths on the command line are the caller's; the script itself works from the repository.
caller=$PWD
cd "$(dirname "$0")/.."

TRIPLE=x86_64-unknown-linux-gnu
WINDOWS=x86_64-pc-windows-gnu
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

# The zip: postflow-VERSION-x86_64-windows/ holding postflow.exe, README.md, config.json,
# LICENSE and docs/, and beside it its .sha256. The version is the one the binary prints; it
# must name the Windows target. The version is asked with $RUN_EXE (Wine by default: this runs
# on Linux). Entries sorted, with the commit's time and fixed permissions, no extra fields, so
# packaging the same binary twice gives the same bytes.
package_windows() {
    local exe=$1 out=$2
    [ -f "$exe" ] || die "no binary at $exe"
    local run_exe=${RUN_EXE:-wine} line version
    line=$($run_exe "$exe" --version 2>/dev/null | awk '$1 == "postflow"') || true
    version=$(awk '{print $2}' <<<"$line")
    [ -n "$version" ] || die "$exe --version (run with $run_exe) does not print \`postflow VERSION ...\`"
    case "$line" in
    *"$WINDOWS)") ;;
    *) die "$exe says \`$line\`, not built for $WINDOWS" ;;
    esac
    local name="postflow-$version-x86_64-windows"
    local mtime
    mtime=$(git log -1 --format=%ct 2>/dev/null || stat -c %Y "$exe")
    mkdir -p "$out"
    python3 - "$out/$name.zip" "$name" "$mtime" "$exe" <<'PY' || die "cannot write $out/$name.zip"
import os, sys, time, zipfile
zip_path, top, mtime, exe = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
# Zip times are local times of day with a 2-second step, and nothing before 1980.
stamp = time.gmtime(max(mtime, 315532800))[:6]
files = {"postflow.exe": exe, "README.md": "README.md", "config.json": "config.json",
         "LICENSE": "LICENSE"}
for root, _, names in os.walk("docs"):
    for n in names:
        files[os.path.join(root, n).replace(os.sep, "/")] = os.path.join(root, n)
with zipfile.ZipFile(zip_path + ".part", "w") as z:
    for arc in sorted(files):
        info = zipfile.ZipInfo(f"{top}/{arc}", date_time=stamp)
        info.compress_type = zipfile.ZIP_DEFLATED
        info.create_system = 3  # unix, so that the permissions below are read
        info.external_attr = (0o100755 if arc.endswith(".exe") else 0o100644) << 16
        with open(files[arc], "rb") as f:
            z.writestr(info, f.read(), compresslevel=9)
os.replace(zip_path + ".part", zip_path)
PY
    (cd "$out" && sha256sum "$name.zip" >"$name.zip.sha256")
    echo "$out/$name.zip"
}

# The Windows zip: postflow.exe cross-built in release with mingw-w64 (the same release
# profile and --locked as the tarball's binary; the linker told not to stamp the build time
# into the PE header, so two builds of one commit give the same bytes), checked and packaged.
build_windows() {
    command -v x86_64-w64-mingw32-gcc >/dev/null ||
        die "x86_64-w64-mingw32-gcc not found (Debian/Ubuntu: apt-get install gcc-mingw-w64-x86-64)"
    command -v wine >/dev/null || die "wine not found (Debian/Ubuntu: apt-get install wine wine64)"
    if command -v rustup >/dev/null && ! rustup target list --installed | grep -qx "$WINDOWS"; then
        rustup target add "$WINDOWS" >&2 || die "the Rust target $WINDOWS is missing and cannot be added"
    fi
    CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUSTFLAGS="-C link-arg=-Wl,--no-insert-timestamp" \
        "$CARGO" build --release --locked -p postflow --bin postflow --target "$WINDOWS" ||
        die "cargo build --target $WINDOWS failed"
    local exe="target/$WINDOWS/release/postflow.exe"
    # Wine's own prefix under target/ (with the ProcessPrng shim Wine 8.0 lacks), as
    # `make test-windows` makes it.
    [ -f target/wine/prefix/system.reg ] ||
        die "no Wine prefix in target/wine/prefix: run \`make test-windows\` once (it makes it)"
    local zip
    zip=$(WINEPREFIX=$PWD/target/wine/prefix WINEDEBUG=-all package_windows "$exe" dist)
    echo "dist: $exe is $(stat -c %s "$exe") bytes; it prints:" \
        "$(WINEPREFIX=$PWD/target/wine/prefix WINEDEBUG=-all wine "$exe" --version 2>/dev/null)"
    echo "dist: $zip"
    echo "dist: $(cat "$zip.sha256")"
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
    build_windows
}

# Whether the code still compiles for a Mac, from Linux: zig stands in for the C compiler that
# ring's build script needs, and clippy never links (linking needs Apple's SDK, which
# cannot be had here), so this checks the Rust code and cfg(unix) gates, not a binary.
check_macos() {
    local bin mac
    bin=$(tools)
    for mac in x86_64-apple-darwin aarch64-apple-darwin; do
        if ! rustup target list --installed | grep -qx "$mac"; then
            rustup target add "$mac" >&2 || die "the Rust target $mac is missing and cannot be added"
        fi
        PATH="$PWD/$bin:$PATH" cargo-zigbuild clippy --locked --workspace --all-targets \
            --target "$mac" -- -D warnings || die "clippy for $mac failed"
        echo "dist: the workspace compiles for $mac without warnings (not linked, not run)"
    done
}

case "${1:-}" in
"") build ;;
check-macos) check_macos ;;
windows) build_windows ;;
package-windows)
    [ $# = 3 ] || die "usage: scripts/dist.sh package-windows EXE DIR"
    exe=$(from_caller "$2") out=$(from_caller "$3")
    package_windows "$exe" "$out"
    ;;
package)
    [ $# = 3 ] || die "usage: scripts/dist.sh package BINARY DIR"
    package "$(from_caller "$2")" "$(from_caller "$3")"
    ;;
*) die "usage: scripts/dist.sh [package BINARY DIR | windows | package-windows EXE DIR | check-macos]" ;;
esac
