#!/bin/sh
# The demo: builds handoff, starts the example HTTP server on
# 127.0.0.1:8080, loads it with wrk and restarts it (SIGHUP: a new binary
# takes over the listening socket) while the load runs, then prints how
# many requests failed. Every loop is bounded; everything is stopped at
# the end.
# Usage: scripts/demo.sh [SECONDS] [RESTARTS]
set -eu
cd "$(dirname "$0")/.."
SECONDS_LOAD=${1:-10}
RESTARTS=${2:-5}
ADDR=127.0.0.1:8080
scripts/deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build --target hello >/dev/null
run=$(mktemp -d /tmp/handoff-demo.XXXXXX)
pidfile=$run/hello.pid
cleanup() {
    for p in $(cat "$run"/pids 2>/dev/null) $(cat "$pidfile" 2>/dev/null); do
        kill -TERM "$p" 2>/dev/null || true
    done
    sleep 0.5
    rm -rf "$run"
}
trap cleanup EXIT INT TERM
if (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null; then
    echo "demo: something already listens on $ADDR; stop it first" >&2
    exit 1
fi
build/examples/hello --listen "$ADDR" --pid-file "$pidfile" 2>"$run/hello.log" &
i=0
until [ -s "$pidfile" ] && curl -fs "http://$ADDR/" >/dev/null 2>&1; do
    i=$((i + 1)); [ $i -gt 100 ] && { echo "demo: server did not start" >&2; cat "$run/hello.log" >&2; exit 1; }
    sleep 0.05
done
echo "demo: serving on http://$ADDR/ as pid $(cat "$pidfile"): $(curl -s "http://$ADDR/")"
echo "demo: wrk -t2 -c64 for ${SECONDS_LOAD}s, with $RESTARTS restarts (kill -HUP) during the load"
wrk -t2 -c64 -d"${SECONDS_LOAD}s" --timeout 5s "http://$ADDR/" >"$run/wrk.txt" 2>&1 &
wrk_pid=$!
gap=$(awk "BEGIN { printf \"%.2f\", $SECONDS_LOAD / ($RESTARTS + 1) }")
n=1
while [ $n -le "$RESTARTS" ]; do
    sleep "$gap"
    old=$(cat "$pidfile")
    echo "$old" >>"$run/pids"
    kill -HUP "$old"
    j=0
    while [ "$(cat "$pidfile")" = "$old" ] && [ $j -lt 200 ]; do sleep 0.01; j=$((j + 1)); done
    echo "demo: restart $n: pid $old -> $(cat "$pidfile") (the new process took over within ~$(( (j + 1) * 10 )) ms)"
    n=$((n + 1))
done
wait "$wrk_pid" || true
reqs=$(awk '/requests in/ {print $1}' "$run/wrk.txt")
rps=$(awk '/Requests\/sec/ {print $2}' "$run/wrk.txt")
errs=$(awk '/Socket errors/ {gsub(",", ""); print $4 + $6 + $8 + $10}' "$run/wrk.txt")
non2xx=$(awk '/Non-2xx/ {print $NF}' "$run/wrk.txt")
failed=$(( ${errs:-0} + ${non2xx:-0} ))
echo "demo: $reqs requests ($rps req/s), $RESTARTS restarts, failed requests: $failed"
[ "$failed" -eq 0 ]
