#!/usr/bin/env bash
# bench/process.sh: the release binary as an operator sees it: its size, the time from start
# to a 200 from /health, and its CPU while idle (watching an empty folder, tunnel off, no
# Frame.io calls to make) over IDLE_SECS (default 60). Linux only (/proc).
#
# Needs target/release/postflow (make bench builds it). Everything it starts is stopped, and
# its temp directory removed, on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=target/release/postflow
IDLE_SECS=${IDLE_SECS:-60}
[ -x "$BIN" ] || { echo "build it first: cargo build --release" >&2; exit 1; }

WORK=$(mktemp -d /tmp/postflow-process.XXXXXX)
PID=""
cleanup() {
    if [ -n "$PID" ]; then kill "$PID" 2>/dev/null || true; wait "$PID" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
DASH=$(free_port)
mkdir -p "$WORK/watch" "$WORK/state"
# Tokens far from expiry, so no refresh happens while idle (nothing is called anyway).
printf '{"access_token":"a","refresh_token":"r","expires_at":%s}\n' $(( $(date +%s) + 86400 )) >"$WORK/state/tokens.json"
chmod 600 "$WORK/state/tokens.json"
cat >"$WORK/config.json" <<EOF
{
  "watch": {"root": "watch"},
  "frameio": {"client_id": "c", "client_secret": "s", "redirect_uri": "https://localhost/postflow/callback",
              "account_id": "a", "project_id": "p", "api_base": "http://127.0.0.1:9", "ims_base": "http://127.0.0.1:9"},
  "serve": {"listen": "127.0.0.1:0"},
  "tunnel": {"mode": "off"},
  "dashboard": {"listen": "127.0.0.1:$DASH"},
  "state_dir": "state"
}
EOF
chmod 600 "$WORK/config.json"

size=$(stat -c %s "$BIN")

t0=$(date +%s%N)
"$BIN" run "$WORK/config.json" 2>"$WORK/log" &
PID=$!
until curl -sf -o /dev/null "http://127.0.0.1:$DASH/health"; do
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/log" >&2; echo "postflow exited" >&2; exit 1; }
    sleep 0.005
done
t1=$(date +%s%N)
startup_ms=$(( (t1 - t0) / 1000000 ))

ticks() { awk '{print $14 + $15}' "/proc/$PID/stat"; }
sleep 2 # let the first scan finish
c0=$(ticks)
sleep "$IDLE_SECS"
c1=$(ticks)
hz=$(getconf CLK_TCK)
idle_pct=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v s="$IDLE_SECS" 'BEGIN { printf "%.2f", 100 * d / hz / s }')
rss_kb=$(awk '/^VmRSS:/ {print $2}' "/proc/$PID/status")
threads=$(awk '/^Threads:/ {print $2}' "/proc/$PID/status")

printf 'release binary size: %s bytes (%.1f MB, stripped)\n' "$size" "$(awk -v s="$size" 'BEGIN{print s/1e6}')"
printf 'startup to a 200 from /health: %d ms\n' "$startup_ms"
printf 'idle CPU over %d s: %s %% of one core (%d ticks), RSS %.1f MB, %d threads\n' \
    "$IDLE_SECS" "$idle_pct" $((c1 - c0)) "$(awk -v k="$rss_kb" 'BEGIN{print k/1000}')" "$threads"
