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

done = function(summary, latency, requests)
  io.write(string.format("non-2xx: %d\n", summary.errors.status))
end
