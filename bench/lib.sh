# Setup shared by bench/run.sh and bench/instructions.sh; sourced, not run. It builds the release binaries, starts
# the mock upstream and Tollgate on loopback with a temporary SQLite store, and makes a funded tenant and a project
# key, so every script drives the same hot path: key from the cache, a paid model, a hold, a charge, a ledger row.
#
# Callers set MOCK_PORT, PORT and DURABILITY first; everything they start is stopped on exit.

target_dir="${CARGO_TARGET_DIR:-target}"
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  # KEEP=DIR keeps the run's files (logs, callgrind dumps) for a closer look.
  if [ -n "${KEEP:-}" ]; then mkdir -p "$KEEP" && cp -r "$work"/. "$KEEP"/; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Builds tollgate and the bare hop (release, `debug = "line-tables-only"` for profilers); sets $bin and $hop_bin.
bench_build() {
  cargo build --release --locked -p tollgate -p bench-hop
  # TOLLGATE_BIN measures another build (an older commit's, for an A/B) instead of this tree's.
  bin="${TOLLGATE_BIN:-$(cd "$target_dir" && pwd)/release/tollgate}"
  hop_bin="$(cd "$target_dir" && pwd)/release/bench-hop"
}

# wait_for URL [SECONDS]: polls until URL answers 2xx (valgrind'd servers start slowly: give them longer).
wait_for() {
  local tries=$(( ${2:-10} * 20 ))
  for _ in $(seq 1 "$tries"); do
    curl -fs "$1" >/dev/null 2>&1 && return 0
    sleep 0.05
  done
  echo "not up: $1" >&2
  exit 1
}

# ports_free PORT...: fails if something already listens on a port, since wait_for would then take another
# run's server (a bench from another worktree, say) for ours.
ports_free() {
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "port $port is in use (another bench running?): stop it or choose other ports (see the script's header)" >&2
      exit 1
    fi
  done
}

# The one request every leg sends: a 12-word prompt, max_tokens 16, for model $1.
chat_body() {
  printf '{"model":"%s","messages":[{"role":"user","content":"Benchmark prompt of a typical short size for a chat request."}],"max_tokens":16}' "$1"
}

start_mock() {
  "$bin" mock-upstream --listen "127.0.0.1:$MOCK_PORT" >"$work/mock.log" 2>&1 &
  pids+=($!)
  wait_for "http://127.0.0.1:$MOCK_PORT/v1/models"
}

# write_tollgate_config [NAME PORT DATABASE_URL]: writes $work/NAME.toml (default: tollgate, $PORT, SQLite in the
# run's directory), once.
write_tollgate_config() {
  local name=${1:-tollgate} port=${2:-$PORT} database=${3:-sqlite://$work/data/tollgate.db}
  [ -f "$work/$name.toml" ] && return 0
  cat >"$work/$name.toml" <<TOML
listen = "127.0.0.1:$port"
database_url = "$database"
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

# The bench tenant's plan: limits far above any load here, so every leg measures the hot path, not 429s (the
# limiter still runs for every request).
[plans.enterprise]
requests_per_minute = 4000000000
tokens_per_minute = 1000000000000
ip_allowlist = true
TOML
}

# seed_store KEYS TENANTS [LOAD_KEYS]: migrates the run's database and fills it with KEYS project keys over TENANTS tenants (see
# bench/seed.py), so the hot path runs against a store of production size.
seed_store() {
  write_tollgate_config
  "$bin" migrate --config "$work/tollgate.toml" >/dev/null
  python3 bench/seed.py "$work/data/tollgate.db" "$1" "$2" "${3:-0}" "$work/keys.txt"
}

# start_tollgate [WRAPPER...]: runs `tollgate serve` (under WRAPPER, e.g. valgrind, when given); sets $tollgate_pid.
start_tollgate() {
  write_tollgate_config
  TOLLGATE_LOG=warn "$@" "$bin" serve --config "$work/tollgate.toml" >"$work/tollgate.log" 2>&1 &
  tollgate_pid=$!
  pids+=("$tollgate_pid")
}

# create_bench_key [PORT] [KEY_JSON]: creates a tenant on the enterprise plan with ample credit and a project key
# (KEY_JSON: its creation body, default {"name":"bench"}) through the Tollgate on PORT (default $PORT); sets $key.
create_bench_key() {
  local base="http://127.0.0.1:${1:-$PORT}" op=(-H "Authorization: Bearer bench-operator-token")
  json_field() { python3 -c "import json,sys; d=json.load(sys.stdin); print($1)"; }
  local created admin project tenant
  created="$(curl -fs -X POST "$base/operator/v1/tenants" "${op[@]}" -H "Content-Type: application/json" \
    -d '{"name":"Bench","plan":"enterprise","owner_email":"bench@example.com"}')"
  admin="$(echo "$created" | json_field 'd["admin_key"]["value"]')"
  project="$(echo "$created" | json_field 'd["project"]["id"]')"
  tenant="$(echo "$created" | json_field 'd["tenant"]["id"]')"
  # Enough credit that no request is refused: every request is held, charged and recorded as in production.
  curl -fs -X POST "$base/operator/v1/tenants/$tenant/credits" "${op[@]}" -H "Content-Type: application/json" \
    -d '{"amount_cents":100000000,"reason":"bench"}' >/dev/null
  key="$(curl -fs -X POST "$base/v1/organization/projects/$project/api_keys" \
    -H "Authorization: Bearer $admin" -H "Content-Type: application/json" -d "${2:-"{\"name\":\"bench\"}"}" \
    | json_field 'd["value"]')"
}
