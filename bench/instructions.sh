#!/usr/bin/env bash
# CPU instructions per request through Tollgate and through the bare hop (bench/hop), counted by valgrind's
# callgrind: a figure that does not move with the machine's noise (only user-space instructions are counted, not the
# kernel's, nor time), so a regression shows in one run. Release builds; loopback only; a fixed request count.
#
# Each server runs under callgrind with instrumentation off (near native speed); 100 requests warm it up (key cache,
# pools, SQLite pages), then instrumentation is switched on and the counters zeroed (callgrind_control) for exactly
# REQUESTS sequential requests on one keep-alive connection, and the counts are dumped: start-up, warm-up and
# shut-down are excluded. ROUNDS such rounds run
# against the same process, so their agreement shows how stable the figure is. The mock upstream runs natively.
#
#   bench/instructions.sh                    # 2,000 requests per round, 2 rounds per server: under a minute
#   REQUESTS=500 ROUNDS=1 bench/instructions.sh
#   DURABILITY=process bench/instructions.sh
#   PARALLEL=16 bench/instructions.sh         # 16 requests in flight (curl --parallel): group commits share
#   IDEMPOTENT=1 bench/instructions.sh        # every request with an Idempotency-Key of its own
#
# Requests are sequential, so each of Tollgate's group commits holds one request: the figure includes one store
# transaction per request, which concurrent load shares among many. Valgrind runs one thread at a time, so the
# figure counts the code run, not contention. Needs valgrind (apt-get install -y valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."

REQUESTS="${REQUESTS:-2000}"
ROUNDS="${ROUNDS:-2}"
WARMUP="${WARMUP:-100}"
DURABILITY="${DURABILITY:-fsync}"
# Requests in flight at once; 1 sends them one after another on one keep-alive connection.
PARALLEL="${PARALLEL:-1}"
MOCK_PORT="${MOCK_PORT:-19101}"
PORT="${PORT:-19081}"
HOP_PORT="${HOP_PORT:-19201}"
command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install -y valgrind" >&2; exit 1; }

source bench/lib.sh
ports_free "$MOCK_PORT" "$PORT" "$HOP_PORT"
bench_build
start_mock

# A curl config of N transfers: curl sends them one after another on one keep-alive connection.
transfers() {
  local url=$1 n=$2
  for _ in $(seq 1 "$n"); do printf 'url = "%s"\noutput = "/dev/null"\n' "$url"; done
}

# drive URL N MODEL [KEY]: N sequential chat requests; fails unless every one answered 200.
drive() {
  local url=$1 n=$2 model=$3 key=${4:-} auth=()
  [ -n "$key" ] && auth=(-H "Authorization: Bearer $key")
  if [ "${IDEMPOTENT:-0}" = 1 ]; then
    # curl's config applies a header to every transfer; this sends each its own key, one after another on one
    # keep-alive connection (the client's own cost is outside the measured process).
    python3 bench/idempotent.py "$url" "$n" "$key" "$(chat_body "$model")"
    return
  fi
  transfers "$url" "$n" >"$work/transfers.curl"
  local ok
  local parallel=()
  [ "$PARALLEL" -gt 1 ] && parallel=(--parallel --parallel-immediate --parallel-max "$PARALLEL")
  ok="$(curl -s "${parallel[@]}" -K "$work/transfers.curl" -w '%{http_code}\n' -H "Content-Type: application/json" "${auth[@]}" \
    -d "$(chat_body "$model")" | grep -c '^200$' || true)"
  if [ "$ok" != "$n" ]; then
    echo "FAILED: $ok of $n requests to $url answered 200" >&2
    exit 1
  fi
}

# control ARGS...: callgrind_control, quiet unless it fails.
control() {
  callgrind_control "$@" >"$work/control.log" 2>&1 || { cat "$work/control.log" >&2; exit 1; }
}

# measure NAME PID URL MODEL [KEY]: warm up, then ROUNDS rounds of REQUESTS counted requests; prints Ir per request.
measure() {
  local name=$1 pid=$2 url=$3 model=$4 key=${5:-}
  drive "$url" "$WARMUP" "$model" "$key"
  for round in $(seq 1 "$ROUNDS"); do
    control --instr=on "$pid"
    control --zero "$pid"
    drive "$url" "$REQUESTS" "$model" "$key"
    # A dump writes the counts since the zero (or the last dump) to a file of its own.
    control --dump="round-$round" "$pid"
    control --instr=off "$pid"
    # Callgrind numbers its dumps from 1, one per round.
    local ir
    ir="$(awk '/^summary:/ {print $2}' "$work/callgrind.$name.$pid.$round")"
    echo "$name round $round: $ir instructions / $REQUESTS requests = $(( ir / REQUESTS )) per request"
    echo "$name $(( ir / REQUESTS ))" >>"$work/results"
  done
}

callgrind=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$work/callgrind.%q{BENCH_TARGET}.%p")

BENCH_TARGET=tollgate start_tollgate "${callgrind[@]}"
wait_for "http://127.0.0.1:$PORT/healthz" 120
create_bench_key
measure tollgate "$tollgate_pid" "http://127.0.0.1:$PORT/v1/chat/completions" fast "$key"

BENCH_TARGET=hop "${callgrind[@]}" "$hop_bin" --listen "127.0.0.1:$HOP_PORT" \
  --upstream "http://127.0.0.1:$MOCK_PORT" >"$work/hop.log" 2>&1 &
hop_pid=$!
pids+=("$hop_pid")
wait_for "http://127.0.0.1:$HOP_PORT/v1/models" 60
measure hop "$hop_pid" "http://127.0.0.1:$HOP_PORT/v1/chat/completions" mock-model

echo
# The mean of the rounds, and their spread ((max - min) / mean): a change smaller than the spread is not seen.
awk '{ n[$1]++; sum[$1] += $2
       if (!($1 in lo) || $2 < lo[$1]) lo[$1] = $2
       if (!($1 in hi) || $2 > hi[$1]) hi[$1] = $2 }
  END {
    for (t in n) mean[t] = sum[t] / n[t]
    printf "instructions per request (mean of %d rounds):\n", n["tollgate"]
    printf "  tollgate %8.0f   spread %.2f %%\n", mean["tollgate"], 100 * (hi["tollgate"] - lo["tollgate"]) / mean["tollgate"]
    printf "  hop      %8.0f   spread %.2f %%\n", mean["hop"], 100 * (hi["hop"] - lo["hop"]) / mean["hop"]
    printf "  ratio    %8.2f\n", mean["tollgate"] / mean["hop"] }' "$work/results"
