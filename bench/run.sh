#!/usr/bin/env bash
# What the hot path costs, as ratios to references measured in the same run (this shared 2-core machine moves
# absolute figures 2-3x from day to day). The same non-streamed chat request goes through four legs, all on loopback:
#
#   direct    load generator -> mock upstream
#   hop       -> bench/hop (a bare hyper proxy that only forwards) -> mock
#   nginx     -> nginx (Debian's; keep-alive upstream, access log off, 2 workers) -> mock
#   tollgate  -> Tollgate (key, policy, hold, provider call, settle, record) -> mock
#
# (a) saturation: wrk, closed loop, 64 connections; RPS, ratio to direct and to the faster of hop and nginx, p50/p99.
# (b) fixed rate: oha, open loop at 2,000 RPS over 16 connections with latency correction (no coordinated omission);
#     p50/p99/p99.9, and the latency each leg adds to direct.
# Last, Tollgate's cold start and resident memory (idle, and peak under the load above), and the latency of one
# fsync on the data directory's disk: what durability = "fsync" may add per commit.
# Instructions per request (valgrind) are bench/instructions.sh.
#
#   bench/run.sh                              # 10 s per leg and part, 2 s warm-ups: about 1.5 minutes
#   DURATION=30s CONNECTIONS=128 bench/run.sh
#   RATE=1000 RATE_DURATION=20s bench/run.sh
#   DURABILITY=process bench/run.sh           # SQLite synchronous = NORMAL instead of FULL
#   SEED_KEYS=1000000 SEED_TENANTS=10000 bench/run.sh   # (e) a store of production size (seeding: about a minute)
#   SEED_KEYS=1000000 SEED_TENANTS=10000 LOAD_KEYS=200000 bench/run.sh   # … and (a)'s load spread over 200,000 keys
#   POSTGRES=0 bench/run.sh                   # without the tollgate-pg leg (default: run it when PostgreSQL is
#                                             # installed; POSTGRES=1 requires it)
#
# tollgate-pg: a second Tollgate, the same hot path on PostgreSQL (a throwaway server from scripts/postgres, on a
# Unix socket, synchronous_commit as DURABILITY says), so one node's throughput on PostgreSQL reads against
# SQLite's in the same run.
#
# Needs wrk (apt-get install -y wrk), nginx (apt-get install -y nginx) and oha (apt-get install -y cmake, then
# cargo install oha --locked --root ~/.cache/tollgate/tools; found there or on PATH, or set OHA=/path/to/oha).
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION="${DURATION:-10s}"
DURABILITY="${DURABILITY:-fsync}"
CONNECTIONS="${CONNECTIONS:-64}"
THREADS="${THREADS:-1}"
RATE="${RATE:-2000}"
RATE_CONNECTIONS="${RATE_CONNECTIONS:-16}"
RATE_DURATION="${RATE_DURATION:-$DURATION}"
MOCK_PORT="${MOCK_PORT:-19100}"
PORT="${PORT:-19080}"
HOP_PORT="${HOP_PORT:-19200}"
NGINX_PORT="${NGINX_PORT:-19300}"
PG_PORT="${PG_PORT:-19380}"
POSTGRES="${POSTGRES:-auto}"
OHA="${OHA:-$(command -v oha || echo "$HOME/.cache/tollgate/tools/bin/oha")}"

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install -y wrk" >&2; exit 1; }
command -v nginx >/dev/null || { echo "nginx is missing: apt-get install -y nginx" >&2; exit 1; }
[ -x "$OHA" ] || {
  echo "oha is missing: apt-get install -y cmake && cargo install oha --locked --root ~/.cache/tollgate/tools" >&2
  exit 1
}

# The PostgreSQL leg runs this script again under a throwaway server for its whole length.
if [ -z "${TOLLGATE_TEST_POSTGRES_URL:-}" ] && [ "$POSTGRES" != 0 ]; then
  if [ "$POSTGRES" = 1 ] || scripts/postgres --check 2>/dev/null; then
    exec scripts/postgres "$PWD/bench/run.sh" "$@"
  fi
fi

source bench/lib.sh
ports_free "$MOCK_PORT" "$PORT" "$HOP_PORT" "$NGINX_PORT" "$PG_PORT"
bench_build

start_mock
# (e): the same figures against a store of production size, e.g. SEED_KEYS=1000000 SEED_TENANTS=10000.
# LOAD_KEYS=K: the first K seeded keys are real, and the tollgate leg's saturation load spreads over all of them
# (round robin, so beyond the key cache's 100,000 entries a key's next use finds it evicted).
LOAD_KEYS="${LOAD_KEYS:-0}"
if [ "${SEED_KEYS:-0}" -gt 0 ]; then
  echo "== seeding the store: $SEED_KEYS keys over ${SEED_TENANTS:-1} tenants, $LOAD_KEYS of them used by the load"
  seed_store "$SEED_KEYS" "${SEED_TENANTS:-1}" "$LOAD_KEYS"
fi
started_at=$(date +%s%N)
start_tollgate
# (d) cold start: exec to the first healthy answer (a new database's migrations included), polled every 5 ms.
for _ in $(seq 1 2000); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.005; done
cold_start_ms=$(( ($(date +%s%N) - started_at) / 1000000 ))
"$hop_bin" --listen "127.0.0.1:$HOP_PORT" --upstream "http://127.0.0.1:$MOCK_PORT" >"$work/hop.log" 2>&1 &
pids+=($!)
if [ -n "${TOLLGATE_TEST_POSTGRES_URL:-}" ]; then
  # A database of its own on the throwaway server: the server URL with another database name.
  pg_db="tollgate_bench_$$"
  psql -q "$TOLLGATE_TEST_POSTGRES_URL" -c "CREATE DATABASE $pg_db" >/dev/null
  pg_url="$(python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$TOLLGATE_TEST_POSTGRES_URL" "$pg_db")"
  write_tollgate_config tollgate-pg "$PG_PORT" "$pg_url"
  TOLLGATE_LOG=warn "$bin" serve --config "$work/tollgate-pg.toml" >"$work/tollgate-pg.log" 2>&1 &
  pids+=($!)
fi

# Tuned as a proxy in front of a model server would be: keep-alive to the upstream (and no cap on requests per
# connection either side, as hop and Tollgate have none), no access log, one worker per core. Everything it writes
# stays in the run's directory, and it runs in the foreground so the cleanup stops it.
mkdir -p "$work/nginx"
cat >"$work/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 2;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_body_temp_path $work/nginx/client_body;
  proxy_temp_path $work/nginx/proxy;
  fastcgi_temp_path $work/nginx/fastcgi;
  uwsgi_temp_path $work/nginx/uwsgi;
  scgi_temp_path $work/nginx/scgi;
  upstream mock {
    server 127.0.0.1:$MOCK_PORT;
    keepalive 64;
    keepalive_requests 1000000;
  }
  server {
    listen 127.0.0.1:$NGINX_PORT;
    location / {
      proxy_pass http://mock;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  }
}
NGINX
nginx -p "$work/nginx" -e "$work/nginx/error.log" -c "$work/nginx/nginx.conf" &
pids+=($!)

wait_for "http://127.0.0.1:$PORT/healthz"
# (d) resident memory, from the kernel's own accounting.
rss_kib() { awk -v f="$1:" '$1 == f {print $2}' "/proc/$tollgate_pid/status"; }
wait_for "http://127.0.0.1:$HOP_PORT/v1/models"
wait_for "http://127.0.0.1:$NGINX_PORT/v1/models"
create_bench_key
idle_rss=$(rss_kib VmRSS)

legs=(direct hop nginx tollgate)
if [ -n "${pg_url:-}" ]; then
  wait_for "http://127.0.0.1:$PG_PORT/healthz" 30
  sqlite_key=$key
  create_bench_key "$PG_PORT"
  pg_key=$key
  key=$sqlite_key
  legs+=(tollgate-pg)
fi
declare -A url auth body
url[direct]="http://127.0.0.1:$MOCK_PORT/v1/chat/completions"
url[hop]="http://127.0.0.1:$HOP_PORT/v1/chat/completions"
url[nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
url[tollgate]="http://127.0.0.1:$PORT/v1/chat/completions"
for leg in direct hop nginx; do auth[$leg]=""; body[$leg]="$(chat_body mock-model)"; done
auth[tollgate]="$key"
body[tollgate]="$(chat_body fast)"
url[tollgate-pg]="http://127.0.0.1:$PG_PORT/v1/chat/completions"
auth[tollgate-pg]="${pg_key:-}"
body[tollgate-pg]="$(chat_body fast)"

# wrk_leg LEG DURATION [wrk options]: the saturation load on one leg, output to stdout.
wrk_leg() {
  local leg=$1 duration=$2
  shift 2
  local keys=""
  [ "$leg" = tollgate ] && [ "$LOAD_KEYS" -gt 0 ] && keys="$work/keys.txt"
  BENCH_KEYS_FILE="$keys" BENCH_KEY="${auth[$leg]}" BENCH_BODY="${body[$leg]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$duration" "$@" \
    -s bench/chat.lua "${url[$leg]}"
}

# Fails the run when a leg saw a non-2xx answer or a socket error: its figures would not be the hot path's.
check_wrk() {
  local leg=$1 file=$2
  if ! grep -q '^non-2xx: 0$' "$file" || grep -q 'Socket errors' "$file"; then
    echo "FAILED: the $leg leg had errors:" >&2
    cat "$file" >&2
    exit 1
  fi
}

echo "== warm-up: 2 s per leg"
for leg in "${legs[@]}"; do
  wrk_leg "$leg" 2s >"$work/warm-$leg.txt"
  check_wrk "$leg" "$work/warm-$leg.txt"
done

echo "== (a) saturation: wrk, $THREADS thread, $CONNECTIONS connections, $DURATION per leg"
for leg in "${legs[@]}"; do
  echo "-- $leg"
  wrk_leg "$leg" "$DURATION" --latency | tee "$work/a-$leg.txt"
  check_wrk "$leg" "$work/a-$leg.txt"
done

echo "== (b) fixed rate: oha, $RATE RPS, $RATE_CONNECTIONS connections, $RATE_DURATION per leg"
for leg in "${legs[@]}"; do
  echo "-- $leg"
  headers=(-H "Content-Type: application/json")
  [ -n "${auth[$leg]}" ] && headers+=(-H "Authorization: Bearer ${auth[$leg]}")
  # -w: requests in flight at the deadline finish (counted) instead of being cut and reported as errors.
  "$OHA" --no-tui --output-format json -z "$RATE_DURATION" -w -c "$RATE_CONNECTIONS" -q "$RATE" --latency-correction \
    -m POST "${headers[@]}" -d "${body[$leg]}" "${url[$leg]}" >"$work/b-$leg.json"
done

echo
python3 bench/report.py "$work" "$RATE" "${legs[@]}"
echo "tollgate: cold start ${cold_start_ms} ms; resident memory idle $((idle_rss / 1024)) MiB, \
peak under load $(( $(rss_kib VmHWM) / 1024 )) MiB"

# Issue 10 allows Tollgate one fsync of the data directory's disk on top of the hop's latency when
# durability = "fsync" (every answered request waits for its commit): measure that fsync here, on the same disk.
python3 - "$work" <<'PY'
import os, statistics, sys, time
path = os.path.join(sys.argv[1], "data", "fsync-probe")
times = []
with open(path, "wb") as f:
    for _ in range(200):
        f.write(b"x" * 4096)
        f.flush()
        start = time.perf_counter()
        os.fsync(f.fileno())
        times.append((time.perf_counter() - start) * 1000)
times.sort()
print(f"fsync of the data directory's disk (4 KiB appends, 200 times): p50 {statistics.median(times):.2f} ms, "
      f"p99 {times[int(len(times) * 0.99) - 1]:.2f} ms")
PY
