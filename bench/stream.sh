#!/usr/bin/env bash
# (c) Streaming: what Tollgate adds to a streamed chat completion's time to first byte and to the delay between two
# chunks, against the same stream straight from the mock upstream, measured in the same run. Release builds;
# loopback only; sequential requests, so each figure is one stream's own, without queueing.
#
# The mock streams CHUNKS content chunks CHUNK_DELAY_MS apart (its `mock:chunks` and `mock:chunk_delay` knobs);
# bench/stream.py reads each stream event by event, timing the first byte and every gap between two events.
#
#   bench/stream.sh                          # 200 streams per leg, 8 chunks 20 ms apart: about a minute
#   STREAMS=50 CHUNK_DELAY_MS=5 bench/stream.sh
#   DURABILITY=process bench/stream.sh
set -euo pipefail
cd "$(dirname "$0")/.."

STREAMS="${STREAMS:-200}"
CHUNKS="${CHUNKS:-8}"
CHUNK_DELAY_MS="${CHUNK_DELAY_MS:-20}"
DURABILITY="${DURABILITY:-fsync}"
MOCK_PORT="${MOCK_PORT:-19102}"
PORT="${PORT:-19082}"

source bench/lib.sh
ports_free "$MOCK_PORT" "$PORT"
bench_build
start_mock
start_tollgate
wait_for "http://127.0.0.1:$PORT/healthz"
create_bench_key

text="mock:chunks=$CHUNKS mock:chunk_delay=$CHUNK_DELAY_MS mock:words=$((CHUNKS * 2)) stream please"
body() {
  # With include_usage the client sees every event the mock sends (Tollgate drops a usage-only chunk it was not asked
  # for, which would merge two of the mock's gaps into one and look like a delay).
  printf '{"model":"%s","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"%s"}]}' \
    "$1" "$text"
}
echo "== $STREAMS streams per leg, $CHUNKS chunks $CHUNK_DELAY_MS ms apart"
python3 bench/stream.py "$STREAMS" \
  "direct" "http://127.0.0.1:$MOCK_PORT/v1/chat/completions" "" "$(body mock-model)" \
  "tollgate" "http://127.0.0.1:$PORT/v1/chat/completions" "$key" "$(body fast)"
