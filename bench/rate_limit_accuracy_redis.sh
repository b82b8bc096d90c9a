#!/usr/bin/env bash
# Accuracy of the shared (Redis) rate limit: one key driven at MULTIPLE × its limit for SECONDS from NODES limiter
# instances on one throwaway Redis (scripts/redis), each check taking the tenant's and the key's request and token
# buckets in one round trip, as the pipeline's check does. Prints admitted/limit and the check's latency.
# The limiter is driven directly (crates/tollgate-redis/examples/accuracy.rs), not through the server: the server's
# rate-limit stage is the in-process limiter's half of the issue.
#
# Settings: PER_MINUTE (600), DURATION (60, seconds), MULTIPLE (5), NODES (2); TOLLGATE_TEST_REDIS_URL to use your own Redis.
set -euo pipefail
cd "$(dirname "$0")/.."

per_minute="${PER_MINUTE:-600}"
seconds="${DURATION:-60}"
multiple="${MULTIPLE:-5}"
nodes="${NODES:-2}"

cargo build --release --locked -q -p tollgate-redis --example accuracy
target_dir="${CARGO_TARGET_DIR:-target}"
bin="$target_dir/release/examples/accuracy"

if [ -n "${TOLLGATE_TEST_REDIS_URL:-}" ]; then
  "$bin" "$TOLLGATE_TEST_REDIS_URL" "$per_minute" "$seconds" "$multiple" "$nodes"
else
  scripts/redis sh -c '"$0" "$TOLLGATE_TEST_REDIS_URL" "$1" "$2" "$3" "$4"' "$bin" "$per_minute" "$seconds" "$multiple" "$nodes"
fi
