#!/usr/bin/env bash
# make demo: a throwaway redis-server on a free port, an hour of realistic backlog plus
# live traffic, the daemon draining it, and what an operator would look at.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
P35="$VENV/bin/p35"
PY="$VENV/bin/python"

work=$(mktemp -d)
port=$("$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
url="redis://127.0.0.1:$port/0"
cleanup() {
  [ -n "${daemon_pid:-}" ] && kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

echo "== redis-server on port $port (throwaway, in $work)"
redis-server --port "$port" --bind 127.0.0.1 --dir "$work" --save '' --appendonly no --daemonize yes \
  --logfile "$work/redis.log" >/dev/null
for _ in $(seq 50); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done

echo "== 30,000 entries of backlog over the last hour"
"$PY" scripts/demo_traffic.py --url "$url" --backlog 30000 --minutes 60

echo "== p35 run (log in $work/p35.log), with 8 s of live traffic at 300/s"
P35_REDIS_URL="$url" P35_SNAPSHOT_INTERVAL_SEC=2 P35_PROGRESS_INTERVAL_SEC=2 \
  "$P35" run >"$work/p35.log" 2>&1 &
daemon_pid=$!
"$PY" scripts/demo_traffic.py --url "$url" --rate 300 --seconds 8
sleep 3
kill -TERM "$daemon_pid"; wait "$daemon_pid"; daemon_pid=
echo "-- daemon log (one JSON event per line):"
cut -c1-220 "$work/p35.log"

echo
echo "== p35 why   (the verdict, its gates, since when, where, what to do)"
P35_REDIS_URL="$url" "$P35" why || true   # exit 0-3 is the verdict (Nagios style)
echo
echo "== p35 status"
P35_REDIS_URL="$url" "$P35" status
echo
echo "== p35 dash a   (why are we not trading, last 5 minutes)"
P35_REDIS_URL="$url" "$P35" dash a
echo
echo "== p35 dash b BTCUSDT ETHUSDT --window 1h"
P35_REDIS_URL="$url" "$P35" dash b BTCUSDT ETHUSDT --window 1h
echo
echo "== p35 alerts -n 5"
P35_REDIS_URL="$url" "$P35" alerts -n 5
echo
echo "== redis-cli -p $port HGETALL quantum:p35:decision:counts:5m"
redis-cli -p "$port" HGETALL quantum:p35:decision:counts:5m | paste - -
echo "== redis-cli -p $port ZREVRANGE quantum:p35:reason:top:1h 0 4 WITHSCORES"
redis-cli -p "$port" ZREVRANGE quantum:p35:reason:top:1h 0 4 WITHSCORES | paste - -
echo "== redis-cli -p $port XREVRANGE quantum:p35:invalid + - COUNT 1"
redis-cli -p "$port" XREVRANGE quantum:p35:invalid + - COUNT 1
