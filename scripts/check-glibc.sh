#!/usr/bin/env bash
# Usage: scripts/check-glibc.sh BINARY [MAX]   (MAX defaults to 2.17)
#
# Fails when BINARY asks the dynamic loader for a glibc symbol version newer than MAX: such a
# binary does not start on a machine whose glibc is MAX (CentOS 7 has 2.17, Debian 11 2.31,
# Ubuntu 20.04 2.31, RHEL/Rocky 8 2.28). Prints the highest version found and, on failure,
# the symbols that need more.
set -euo pipefail

binary=${1:?usage: scripts/check-glibc.sh BINARY [MAX]}
max=${2:-2.17}
[ -f "$binary" ] || { echo "check-glibc: no such file: $binary" >&2; exit 1; }
command -v objdump >/dev/null ||
    { echo "check-glibc: objdump not found (Debian/Ubuntu: apt-get install binutils)" >&2; exit 1; }

symbols=$(objdump -T "$binary") || { echo "check-glibc: objdump cannot read $binary" >&2; exit 1; }
versions=$(grep -o 'GLIBC_[0-9][0-9.]*' <<<"$symbols" | sed 's/^GLIBC_//' | sort -uV || true)
if [ -z "$versions" ]; then
    echo "check-glibc: $binary asks for no GLIBC_ symbol version (not linked against glibc)" >&2
    exit 1
fi
highest=$(tail -n1 <<<"$versions")
if [ "$(printf '%s\n%s\n' "$max" "$highest" | sort -V | tail -n1)" != "$max" ]; then
    echo "check-glibc: $binary needs GLIBC_$highest, more than the GLIBC_$max it must run on:" >&2
    while read -r version; do
        if [ "$(printf '%s\n%s\n' "$max" "$version" | sort -V | tail -n1)" != "$max" ]; then
            grep -F "(GLIBC_$version)" <<<"$symbols" | awk '{print "  " $NF " (GLIBC_'"$version"')"}' >&2
        fi
    done <<<"$versions"
    exit 1
fi
echo "check-glibc: $binary needs at most GLIBC_$highest (limit GLIBC_$max)"
