#!/usr/bin/env bash
# `make demo`: postflow end to end on this machine, with no Adobe account and no Cloudflare.
#
# Builds the debug binaries, starts the Frame.io simulator (frameio-sim, with two projects in
# one account) and postflow with the cloudflared stand-in (fake-cloudflared) as its quick
# tunnel, all on loopback. One postflow serves two shows, each folder to its own Frame.io
# project with its own template: demo/inbox/nightfall (SQ01_UNDLM_00412_v001.mov goes to
# SQ01/UNDLM_00412) and demo/inbox/promo (TEASER_30s_v001.mp4 goes to Deliveries/TEASER/30s).
# Writes demo/config.json from scripts/demo.config.json, signs in through the simulator, drops
# generated media files into both folders at once (one .mov written slowly, so the page shows
# a file waiting to settle; a v002 of a shot once its v001 is in, so Frame.io stacks the two),
# prints each arrival under its project and the dashboard URL. Ctrl-C stops what this script
# started, by pid, and nothing else.
#
# Environment: DEMO_DASHBOARD_PORT (8080), DEMO_SERVE_PORT (8081), DEMO_SIM_PORT (9090): a busy
# port is replaced by a free one. DEMO_SECONDS=N stops the demo by itself after N seconds and
# exits non-zero unless every dropped file arrived once, in its own project (used to check the
# demo unattended).
set -euo pipefail
# Every background job is started with job control on (`set -m`, then off again), which gives
# it a process group of its own: the terminal's Ctrl-C reaches this script only, and the
# script stops each job in order, by pid.

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEMO="$ROOT/demo"
CARGO="${CARGO:-cargo}"
BIN="$ROOT/target/debug"

SIM_PID="" POSTFLOW_PID="" WRITER_PID="" WATCHER_PID="" VERSION_PID="" REVIEW_PID=""
# Bold "demo:" on a terminal, plain text when the output is a file or a pipe.
if [ -t 1 ]; then
  say() { printf '\033[1mdemo:\033[0m %s\n' "$*"; }
else
  say() { printf 'demo: %s\n' "$*"; }
fi

stop_pid() { # name pid [group]: SIGTERM to the pid (or to its own process group), then wait
    local name=$1 pid=$2
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    if [ -n "${3:-}" ]; then kill -TERM -- "-$pid" 2>/dev/null || true; else kill -TERM "$pid" 2>/dev/null || true; fi
    for _ in $(seq 1 200); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    say "$name ($pid) did not stop in 20 s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

CLEANED=""
cleanup() {
    [ -n "$CLEANED" ] && return
    CLEANED=1
    trap - INT TERM EXIT
    echo
    say "stopping"
    # These two are shell loops: their process group holds the loop and its `sleep`.
    stop_pid "the slow writer" "$WRITER_PID" group
    stop_pid "the v002 writer" "$VERSION_PID" group
    stop_pid "the reviewer" "$REVIEW_PID" group
    stop_pid "the arrival watcher" "$WATCHER_PID" group
    # postflow stops its cloudflared stand-in itself (SIGTERM, grace period), then exits.
    stop_pid postflow "$POSTFLOW_PID"
    stop_pid frameio-sim "$SIM_PID"
    say "stopped. Logs and files stay in demo/ (postflow.log, sim.log, inbox/)."
}
trap cleanup EXIT
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
pick_port() { # preferred port -> that port if free, else a free one
    local p=$1
    while port_busy "$p"; do p=$((20000 + RANDOM % 40000)); done
    echo "$p"
}

# ---------------------------------------------------------------- build
say "building (debug profile: cargo build --workspace --bins)"
"$CARGO" build --quiet --workspace --bins

# ---------------------------------------------------------------- fresh demo folder
mkdir -p "$DEMO"
rm -rf "$DEMO/inbox" "$DEMO/postflow-state" "$DEMO/registry" "$DEMO/originals" "$DEMO"/*.log "$DEMO/sim.out"
# One watched folder per project (the `projects` list in scripts/demo.config.json).
PROJECT_NAMES=(nightfall promo)
for name in "${PROJECT_NAMES[@]}"; do mkdir -p "$DEMO/inbox/$name"; done
mkdir -p "$DEMO/registry" "$DEMO/originals"

SIM_PORT=$(pick_port "${DEMO_SIM_PORT:-9090}")
DASHBOARD_PORT=$(pick_port "${DEMO_DASHBOARD_PORT:-8080}")
SERVE_PORT=$(pick_port "${DEMO_SERVE_PORT:-8081}")
[ "$SERVE_PORT" != "$DASHBOARD_PORT" ] || SERVE_PORT=$(pick_port $((DASHBOARD_PORT + 1)))

# ---------------------------------------------------------------- the simulated Frame.io
# --fetch alternate: its fetcher pulls through the tunnel with plain GETs and Range requests
# in turn, like Frame.io does. --project Promo: a second project beside the main one, in the
# same account (so the two share Frame.io's rate limits, as they would). --originals-dir: it
# keeps what arrived, so postflow (upload.verify "download") can download each file back.
set -m
"$BIN/frameio-sim" --listen "127.0.0.1:$SIM_PORT" --registry "$DEMO/registry" \
    --fetch alternate --project Promo --originals-dir "$DEMO/originals" \
    >"$DEMO/sim.out" 2>"$DEMO/sim.log" &
SIM_PID=$!
set +m
for _ in $(seq 1 100); do
    grep -qx ready "$DEMO/sim.out" 2>/dev/null && break
    kill -0 "$SIM_PID" 2>/dev/null || { cat "$DEMO/sim.log"; say "frameio-sim did not start"; exit 1; }
    sleep 0.1
done
grep -qx ready "$DEMO/sim.out" || { say "frameio-sim did not say ready"; exit 1; }
setting() { sed -n "s/^$1=//p" "$DEMO/sim.out"; }
SIM_URL=$(setting base_url)
# The simulated Frame.io project of each of PROJECT_NAMES: nightfall uploads into the main
# project, promo into Promo.
PROJECT_IDS=("$(setting project_id)" "$(setting project.Promo)")
say "frameio-sim (pid $SIM_PID) at $SIM_URL"

# ---------------------------------------------------------------- config and sign-in
sed -e "s|@CLIENT_ID@|$(setting client_id)|" \
    -e "s|@CLIENT_SECRET@|$(setting client_secret)|" \
    -e "s|@REDIRECT_URI@|$(setting redirect_uri)|" \
    -e "s|@ACCOUNT_ID@|$(setting account_id)|" \
    -e "s|@NIGHTFALL_PROJECT_ID@|${PROJECT_IDS[0]}|" \
    -e "s|@PROMO_PROJECT_ID@|${PROJECT_IDS[1]}|" \
    -e "s|@SIM_URL@|$SIM_URL|g" \
    -e "s|@SERVE_PORT@|$SERVE_PORT|" \
    -e "s|@DASHBOARD_PORT@|$DASHBOARD_PORT|" \
    -e "s|@CLOUDFLARED@|$BIN/fake-cloudflared|" \
    "$ROOT/scripts/demo.config.json" >"$DEMO/config.json"
chmod 600 "$DEMO/config.json"

# What `postflow auth` would save after a browser sign-in, minted by the simulator's IMS.
LOGIN=$(curl -sf -X POST "$SIM_URL/_sim/login")
field() { printf '%s' "$LOGIN" | sed -n "s/.*\"$1\":\"\\{0,1\\}\\([^\",}]*\\).*/\\1/p"; }
mkdir -p "$DEMO/postflow-state"
( umask 077
  printf '{"access_token":"%s","refresh_token":"%s","expires_at":%s}\n' \
      "$(field access_token)" "$(field refresh_token)" $(( $(date +%s) + $(field expires_in) )) \
      >"$DEMO/postflow-state/tokens.json" )

# ---------------------------------------------------------------- postflow
# SIM_TUNNEL_REGISTRY: the stand-in writes its public name there and the simulator's fetcher
# resolves https://<words>.trycloudflare.com through it, as Frame.io reaches a real tunnel.
set -m
SIM_TUNNEL_REGISTRY="$DEMO/registry" "$BIN/postflow" run "$DEMO/config.json" 2>"$DEMO/postflow.log" &
POSTFLOW_PID=$!
set +m
DASH="http://127.0.0.1:$DASHBOARD_PORT"
for _ in $(seq 1 100); do
    curl -sf "$DASH/health" >/dev/null 2>&1 && break
    kill -0 "$POSTFLOW_PID" 2>/dev/null || { cat "$DEMO/postflow.log"; say "postflow did not start"; exit 1; }
    sleep 0.1
done
say "postflow (pid $POSTFLOW_PID) is running; its log: demo/postflow.log"

# ---------------------------------------------------------------- media
be32() { printf '\\x%02x\\x%02x\\x%02x\\x%02x' $(($1 >> 24 & 255)) $(($1 >> 16 & 255)) $(($1 >> 8 & 255)) $(($1 & 255)); }
# QuickTime header for a file of $1 bytes: ftyp, moov, and the mdat header that runs to the end.
mov_head() {
    printf "$(be32 20)ftypqt  \\x00\\x00\\x00\\x00qt  $(be32 24)moov"
    head -c 16 /dev/urandom
    printf "$(be32 $(($1 - 44)))mdat"
}
# A finished file appears at once (written under a temporary name, then renamed, as renders do).
drop() { # path under demo/inbox (the project's folder first), size in bytes
    local path="$DEMO/inbox/$1" size=$2
    mkdir -p "$(dirname "$path")"
    case "$path" in
        *.mov|*.mp4) { mov_head "$size"; head -c $((size - 52)) /dev/urandom; } >"$path.partial" ;;
        *) head -c "$size" /dev/urandom >"$path.partial" ;;
    esac
    mv "$path.partial" "$path"
}
# A .mov written in place over about 40 s: the page shows it waiting until it settles.
slow_mov() { # path under demo/inbox, MiB
    local path="$DEMO/inbox/$1" mib=$2
    mov_head $((mib * 1048576)) >"$path"
    head -c $((1048576 - 52)) /dev/urandom >>"$path"
    for _ in $(seq 2 "$mib"); do
        sleep 2
        head -c 1048576 /dev/urandom >>"$path"
    done
}

# What each project's Frame.io should end up holding: "project:path under its root folder".
EXPECTED=(
    nightfall:SQ01/UNDLM_00412/SQ01_UNDLM_00412_v001.mov
    nightfall:SQ01/UNDLM_00412/SQ01_UNDLM_00412_v002.mov
    nightfall:SQ01/UNDLM_00413/SQ01_UNDLM_00413_v002.mov
    nightfall:SQ02/UNDLM_00001/SQ02_UNDLM_00001_v001.mp4
    nightfall:audio/SQ01_mix_v003.wav
    nightfall:notes/edit_notes.pdf
    nightfall:SQ01/UNDLM_00414/SQ01_UNDLM_00414_v001.mov
    promo:Deliveries/TEASER/30s/TEASER_30s_v001.mp4
    promo:Deliveries/TEASER/15s/TEASER_15s_v001.mp4
    promo:Deliveries/TRAILER/120s/TRAILER_120s_v001.mov
    promo:Deliveries/artwork/key_art.png
)
# Both shows' exports land at once, the two folders' files in turn.
drop nightfall/SQ01_UNDLM_00412_v001.mov $((8 * 1048576))
drop promo/TEASER_30s_v001.mp4 $((5 * 1048576))
drop nightfall/SQ01_UNDLM_00413_v002.mov $((40 * 1048576))
drop promo/TRAILER_120s_v001.mov $((12 * 1048576))
drop nightfall/SQ02_UNDLM_00001_v001.mp4 $((3 * 1048576))
drop promo/TEASER_15s_v001.mp4 $((3 * 1048576))
drop nightfall/audio/SQ01_mix_v003.wav $((2 * 1048576))
drop promo/artwork/key_art.png 300000
drop nightfall/notes/edit_notes.pdf 48000
set -m
slow_mov nightfall/SQ01_UNDLM_00414_v001.mov 20 &
WRITER_PID=$!
set +m

# The simulated Frame.io project of a project name (one of PROJECT_NAMES).
project_id() {
    local i
    for i in "${!PROJECT_NAMES[@]}"; do
        [ "${PROJECT_NAMES[$i]}" = "$1" ] && { echo "${PROJECT_IDS[$i]}"; return; }
    done
}
# {"<path>":{"complete":1,"copies":1,"sha256":"…","size":123},…} of one simulated project, one
# entry a line.
sim_paths() { # project name
    curl -sf "$SIM_URL/_sim/paths?project=$(project_id "$1")" | grep -oE '"[^"]+":\{[^}]*\}' || true
}

# The next version of a shot, once the first is in Frame.io: postflow stacks v002 on v001.
arrived() { # path [project name, default nightfall]
    sim_paths "${2:-nightfall}" | grep -F "\"$1\":{" | grep -qE '"complete":[1-9]'
}
next_version() {
    until arrived SQ01/UNDLM_00412/SQ01_UNDLM_00412_v001.mov; do sleep 1; done
    say "dropping SQ01_UNDLM_00412_v002.mov into nightfall, the next version of that shot"
    drop nightfall/SQ01_UNDLM_00412_v002.mov $((6 * 1048576))
}
set -m
next_version &
VERSION_PID=$!
set +m

# A reviewer comments on v001 once it is in Frame.io: the simulator delivers the webhook
# through the tunnel, and postflow shows the comment under the job (and notifies it, with a
# notify.webhook_url).
review_comment() {
    until arrived SQ01/UNDLM_00412/SQ01_UNDLM_00412_v001.mov; do sleep 1; done
    local file_id=""
    until [ -n "$file_id" ]; do
        sleep 1
        # The job's fields come in any order: take the run of fields around its path.
        file_id=$(curl -sf "$DASH/api/jobs?project=nightfall" \
            | grep -oE '[^{}]*"path":"SQ01_UNDLM_00412_v001.mov"[^{}]*' \
            | grep -oE '"file_id":"[^"]*"' | head -n 1 \
            | sed -E 's/.*"file_id":"([^"]*)"/\1/' || true)
    done
    curl -sf -X POST "$SIM_URL/_sim/comments" -H 'Content-Type: application/json' \
        -d "{\"file_id\":\"$file_id\",\"author\":\"Ada\",\"text\":\"too dark\",\"timestamp\":84}" >/dev/null \
        && say "Ada commented on SQ01_UNDLM_00412_v001.mov in Frame.io: see it under the job on the page"
}
set -m
review_comment &
REVIEW_PID=$!
set +m

# Prints each file as it arrives in the simulated Frame.io (from the simulator's /_sim/paths),
# and each version stack as it changes (from /_sim/stacks).
# Each project's in turn (?project=ID); a line starts with the project's name.
watch_arrivals() {
    local seen=" " stacks_seen=""
    while sleep 1; do
        local name
        for name in "${PROJECT_NAMES[@]}"; do
            local paths
            # complete copies only
            paths=$(sim_paths "$name" | grep -E '"complete":[1-9]' || true)
            while IFS= read -r entry; do
                [ -n "$entry" ] || continue
                local p=${entry%%\":\{*}; p=${p#\"}
                case "$seen" in *" $name:$p "*) continue ;; esac
                seen="$seen$name:$p "
                local size; size=$(printf "%s" "$entry" | sed -E 's/.*"size":([0-9]+).*/\1/')
                say "[$name] arrived in Frame.io: $p ($size bytes)"
            done <<<"$paths"
        done
        local stacks=""
        for name in "${PROJECT_NAMES[@]}"; do
            # [{…,"folder":"SQ01/UNDLM_00412",…,"versions":["…_v001.mov","…_v002.mov"]},…]: one
            # object per stack, its versions bottom first
            stacks="$stacks$(curl -sf "$SIM_URL/_sim/stacks?project=$(project_id "$name")" \
                | grep -oE '\{[^}]*\}' | sed "s/^/$name /" || true)"$'\n'
        done
        if [ -n "${stacks//$'\n'/}" ] && [ "$stacks" != "$stacks_seen" ]; then
            stacks_seen=$stacks
            while IFS= read -r st; do
                [ -n "$st" ] || continue
                local folder versions
                folder=$(printf '%s' "$st" | sed -E 's/.*"folder":"([^"]*)".*/\1/')
                versions=$(printf '%s' "$st" | sed -E 's/.*"versions":\[([^]]*)\].*/\1/; s/"//g')
                say "[${st%% *}] version stack in Frame.io: $folder: ${versions//,/ < } (top: ${versions##*,})"
            done <<<"$stacks"
        fi
    done
}
set -m
watch_arrivals &
WATCHER_PID=$!
set +m

say "two projects in one postflow, each folder to its own Frame.io project and template:"
say "  nightfall: demo/inbox/nightfall, {seq}_UNDLM_{shot}_v{version}.{ext} into {seq}/UNDLM_{shot}"
say "  promo:     demo/inbox/promo, {spot}_{length}_v{version}.{ext} into Deliveries/{spot}/{length}"
say "dropped 5 files into nightfall and 4 into promo, and started writing SQ01_UNDLM_00414_v001.mov slowly"
say "SQ01_UNDLM_00412_v002.mov follows once its v001 is in Frame.io"
echo
say "open the status page: $DASH"
say "what the simulated Frame.io holds: $SIM_URL/_sim/paths?project=<id> (nightfall ${PROJECT_IDS[0]}, promo ${PROJECT_IDS[1]})"
say "press Ctrl-C to stop"
echo

if [ -n "${DEMO_SECONDS:-}" ]; then
    end=$(( $(date +%s) + DEMO_SECONDS ))
    while [ "$(date +%s)" -lt "$end" ] && kill -0 "$POSTFLOW_PID" 2>/dev/null; do sleep 1; done
    missing=0
    for e in "${EXPECTED[@]}"; do
        sim_paths "${e%%:*}" | grep -F "\"${e#*:}\":{" | grep -qE '"complete":1,' \
            || { say "missing in ${e%%:*}: ${e#*:}"; missing=1; }
    done
    for name in "${PROJECT_NAMES[@]}"; do
        # Every copy in a project is one of its own expected files (nothing landed in the other
        # project), and none is there twice.
        while IFS= read -r entry; do
            [ -n "$entry" ] || continue
            p=${entry%%\":\{*}; p=${p#\"}
            case " ${EXPECTED[*]} " in *" $name:$p "*) ;; *) say "unexpected in $name: $p"; missing=1 ;; esac
            printf '%s' "$entry" | grep -qE '"copies":1,' || { say "in $name more than once: $p"; missing=1; }
        done <<<"$(sim_paths "$name")"
    done
    curl -sf "$SIM_URL/_sim/stacks?project=${PROJECT_IDS[0]}" \
        | grep -qF '"versions":["SQ01_UNDLM_00412_v001.mov","SQ01_UNDLM_00412_v002.mov"]' \
        || { say "v002 is not stacked on v001"; missing=1; }
    # What the page shows: each project's jobs by state (/api/status's queue.by_project).
    status=$(curl -sf "$DASH/api/status" || true)
    for name in "${PROJECT_NAMES[@]}"; do
        counts=$(printf '%s' "$status" | grep -oE "\"$name\":\{\"counts\":\{[^}]*\}" \
            | sed -E 's/.*"counts":\{([^}]*)\}/\1/; s/"//g' | tr ',' '\n' | grep -v ':0$' | sed 's/:/ /' \
            | paste -sd, - | sed 's/,/, /g' || true)
        say "the page says $name: ${counts:-no jobs}"
    done
    # upload.verify "download": every done job says Frame.io's copy was downloaded back, equal.
    verified=$(curl -sf "$DASH/api/jobs?state=done&limit=1000" | grep -oE '"verified":"download-sha256"' | wc -l || true)
    say "downloaded back from Frame.io and equal to the local file: $verified of ${#EXPECTED[@]}"
    [ "$verified" = "${#EXPECTED[@]}" ] || missing=1
    cleanup
    [ "$missing" = 0 ] && say "all ${#EXPECTED[@]} files arrived once, each in its own project; v002 stacked on v001" || exit 1
    exit 0
fi

# Until Ctrl-C; if postflow stops by itself, say so and end the demo.
while kill -0 "$POSTFLOW_PID" 2>/dev/null; do sleep 1; done
say "postflow exited; the end of its log:"
tail -n 20 "$DEMO/postflow.log"
exit 1
