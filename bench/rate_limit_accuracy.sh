#!/usr/bin/env bash
# Rate-limit accuracy: one key limited to LIMIT requests a minute (its `rate_limits`), driven at FACTOR times that
# for RUN_SECONDS, one request after another on schedule (bench/rate_limit_accuracy.py, open loop); reports how many
# were admitted against what the limit allows in that time (LIMIT × RUN_SECONDS / 60), for each limiter leg and for
# each limit in LIMITS.
#
#   bench/rate_limit_accuracy.sh                       # 600/min and 60/min, 5x, 60 s: about a minute per leg
#   LIMITS=1200 FACTOR=5 RUN_SECONDS=60 bench/rate_limit_accuracy.sh
#   REDIS=0 bench/rate_limit_accuracy.sh               # the local leg only
#
# Legs: `local` (the in-process limiter), and when redis-server is installed (the script then runs itself under
# scripts/redis, a throwaway server on a Unix socket) `redis` (one node with `redis_url`) and `redis-2n` (two
# nodes on one store and one Redis, the requests handed to them in turn).
#
# GCRA admits the limit plus one second's burst (LIMIT / 60) over any window, so the ideal ratio for 60 s is
# 1 + 1/60 ≈ 1.017; the target is within 2 % of the limit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "${REDIS:-1}" = 1 ] && [ -z "${TOLLGATE_TEST_REDIS_URL:-}" ] && scripts/redis --check 2>/dev/null; then
  exec scripts/redis "$0" "$@"
fi

LIMITS="${LIMITS:-600 60}"
FACTOR="${FACTOR:-5}"
RUN_SECONDS="${RUN_SECONDS:-60}"
DURABILITY="${DURABILITY:-process}"
MOCK_PORT="${MOCK_PORT:-19102}"
PORT="${PORT:-19082}"
PORT2="${PORT2:-19083}"

source bench/lib.sh
ports_free "$MOCK_PORT" "$PORT" "$PORT2"
bench_build
start_mock

# leg NAME LIMIT NODES EXTRA_CONFIG: NODES fresh Tollgates (ports PORT, PORT2) on one new SQLite store, with
# EXTRA_CONFIG's top-level lines; one key limited to LIMIT a minute, driven at FACTOR × LIMIT; a report line.
leg() {
  local name=$1 limit=$2 nodes=$3 extra=$4 run="$1-$2"
  local ports=("$PORT" "$PORT2") node_pids=() i
  mkdir -p "$work/$run"
  for ((i = 0; i < nodes; i++)); do
    write_tollgate_config "$run-$i" "${ports[$i]}" "sqlite://$work/$run/tollgate.db"
    # Top-level keys must come before the first table.
    { printf '%s\n' "$extra"; cat "$work/$run-$i.toml"; } >"$work/$run-$i.toml.new" && mv "$work/$run-$i.toml.new" "$work/$run-$i.toml"
    # One node migrates the new store before the next opens it.
    TOLLGATE_LOG=warn "$bin" serve --config "$work/$run-$i.toml" >"$work/$run-$i.log" 2>&1 &
    node_pids+=($!)
    pids+=($!)
    wait_for "http://127.0.0.1:${ports[$i]}/healthz" 30
  done
  create_bench_key "$PORT" "{\"name\":\"limited\",\"rate_limits\":{\"requests_per_minute\":$limit}}"
  local rate result targets
  rate="$(python3 -c "print($limit * $FACTOR / 60)")"
  targets="$(IFS=,; echo "${ports[*]:0:$nodes}")"
  result="$(python3 bench/rate_limit_accuracy.py "$targets" "$key" "$rate" "$RUN_SECONDS" "$(chat_body fast)")"
  for pid in "${node_pids[@]}"; do kill "$pid" && wait "$pid" 2>/dev/null || true; done
  python3 - "$name" "$result" <<PY
import json, sys
name, r = sys.argv[1], json.loads(sys.argv[2])
admitted = r["statuses"].get("200", 0)
allowed = $limit * r["elapsed_s"] / 60
other = {k: v for k, v in r["statuses"].items() if k not in ("200", "429")}
print(f"{name:9} limit {$limit}/min x$FACTOR for {r['elapsed_s']}s: sent {r['sent']}, admitted {admitted}, "
      f"refused {r['statuses'].get('429', 0)}, allowed {allowed:.1f}; admitted/allowed = {admitted / allowed:.4f}"
      + (f"; other statuses {other}" if other else ""))
PY
}

for limit in $LIMITS; do
  leg local "$limit" 1 ''
  if [ -n "${TOLLGATE_TEST_REDIS_URL:-}" ]; then
    leg redis "$limit" 1 "redis_url = \"$TOLLGATE_TEST_REDIS_URL\""
    leg redis-2n "$limit" 2 "redis_url = \"$TOLLGATE_TEST_REDIS_URL\""
  fi
done
