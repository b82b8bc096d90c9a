-- wrk script: non-streamed chat completions. The Authorization header comes from the environment (BENCH_KEY),
-- so the same script drives the mock directly (no key) and Tollgate (a project key).
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local key = os.getenv("BENCH_KEY")
if key and key ~= "" then
  wrk.headers["Authorization"] = "Bearer " .. key
end
wrk.body = '{"model":"' .. (os.getenv("BENCH_MODEL") or "fast") ..
  '","messages":[{"role":"user","content":"Benchmark prompt of a typical short size for a chat request."}],"max_tokens":16}'

local errors = 0
response = function(status, headers, body)
  if status ~= 200 then
    errors = errors + 1
  end
end

done = function(summary, latency, requests)
  io.write(string.format("non-2xx: %d\n", summary.errors.status))
end
