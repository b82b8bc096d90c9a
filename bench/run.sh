#!/usr/bin/env bash
# Non-streamed chat throughput: wrk straight at the mock upstream, then through Tollgate to the same mock, in one
# run, and the ratio of the two. Release builds; loopback only; bounded duration. Needs wrk (apt-get install wrk).
#
#   bench/run.sh                 # 10 s per leg, 64 connections, 1 wrk thread
#   DURATION=30s CONNECTIONS=128 bench/run.sh
#   DURABILITY=process bench/run.sh   # SQLite synchronous = NORMAL instead of FULL
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
DURABILITY="${DURABILITY:-fsync}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
MOCK_PORT="${MOCK_PORT:-19100}"
PORT="${PORT:-19080}"
command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-target}"
cargo build --release --locked -p tollgate
bin="$(cd "$target_dir" && pwd)/release/tollgate"

work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

wait_for() {
  for _ in $(seq 1 200); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "not up: $1" >&2
  exit 1
}

"$bin" mock-upstream --listen "127.0.0.1:$MOCK_PORT" >"$work/mock.log" 2>&1 &
pids+=($!)
cat >"$work/tollgate.toml" <<TOML
listen = "127.0.0.1:$PORT"
database_url = "sqlite://$work/data/tollgate.db"
operator_token = "bench-operator-token"
durability = "$DURABILITY"

[[providers]]
id = "mock"
kind = "openai"
base_url = "http://127.0.0.1:$MOCK_PORT/v1"

[[models]]
id = "fast"
provider = "mock"
upstream_model = "mock-model"
input_cents_per_million_tokens = 15
output_cents_per_million_tokens = 60
TOML
TOLLGATE_LOG=warn "$bin" serve --config "$work/tollgate.toml" >"$work/tollgate.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$MOCK_PORT/v1/models"
wait_for "http://127.0.0.1:$PORT/healthz"

json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
created="$(curl -fs -X POST "http://127.0.0.1:$PORT/operator/v1/tenants" \
  -H "Authorization: Bearer bench-operator-token" -H "Content-Type: application/json" \
  -d '{"name":"Bench","plan":"enterprise","owner_email":"bench@example.com"}')"
admin="$(echo "$created" | json_field 'd["admin_key"]["value"]')"
project="$(echo "$created" | json_field 'd["project"]["id"]')"
tenant="$(echo "$created" | json_field 'd["tenant"]["id"]')"
# Enough credit that no request is refused: every request is held, charged and recorded as in production.
curl -fs -X POST "http://127.0.0.1:$PORT/operator/v1/tenants/$tenant/credits" \
  -H "Authorization: Bearer bench-operator-token" -H "Content-Type: application/json" \
  -d '{"amount_cents":100000000,"reason":"bench"}' >/dev/null
key="$(curl -fs -X POST "http://127.0.0.1:$PORT/v1/organization/projects/$project/api_keys" \
  -H "Authorization: Bearer $admin" -H "Content-Type: application/json" -d '{"name":"bench"}' \
  | json_field 'd["value"]')"

rps() { awk '/Requests\/sec/ {print $2}'; }
echo "== warm-up"
BENCH_MODEL=mock-model wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s bench/chat.lua "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" >/dev/null
BENCH_KEY="$key" wrk -t"$THREADS" -c"$CONNECTIONS" -d2s -s bench/chat.lua "http://127.0.0.1:$PORT/v1/chat/completions" >/dev/null

echo "== direct: mock upstream"
direct_out="$(BENCH_MODEL=mock-model wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/chat.lua \
  "http://127.0.0.1:$MOCK_PORT/v1/chat/completions")"
echo "$direct_out"
echo "== through tollgate"
gate_out="$(BENCH_KEY="$key" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s bench/chat.lua \
  "http://127.0.0.1:$PORT/v1/chat/completions")"
echo "$gate_out"

direct="$(echo "$direct_out" | rps)"
gate="$(echo "$gate_out" | rps)"
echo
echo "direct RPS:   $direct"
echo "tollgate RPS: $gate"
python3 -c "print(f'ratio (tollgate/direct): {float($gate)/float($direct):.3f}')"
