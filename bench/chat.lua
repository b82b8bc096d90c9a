-- wrk script: non-streamed chat completions. The body (BENCH_BODY, from bench/lib.sh's chat_body) and the
-- Authorization header (BENCH_KEY) come from the environment, so the same script drives the mock, the bare hop and
-- nginx (no key) and Tollgate (a project key).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = assert(os.getenv("BENCH_BODY"), "BENCH_BODY is unset: run this through bench/run.sh")

-- BENCH_KEYS_FILE (one key per line): each request takes the next key, round robin, instead of BENCH_KEY. This
-- costs wrk a Lua call per request, so compare such a run with another that spreads its load too.
local keys_file = os.getenv("BENCH_KEYS_FILE")
if keys_file and keys_file ~= "" then
  local keys = {}
  for line in io.lines(keys_file) do
    keys[#keys + 1] = "Bearer " .. line
  end
  local headers = { ["Content-Type"] = "application/json" }
  local next_key = math.random(#keys)
  request = function()
    next_key = next_key % #keys + 1
    headers["Authorization"] = keys[next_key]
    return wrk.format("POST", nil, headers, wrk.body)
  end
end

done = function(summary, latency, requests)
  io.write(string.format("non-2xx: %d\n", summary.errors.status))
end
