-- wrk script for bench/bench_http.py: one fixed request, described by the environment.
--
--   BENCH_METHOD         GET (default) or POST
--   BENCH_BODY           request body, sent as application/json (POST /authenticate etc.)
--   BENCH_CONTENT_TYPE   the body's Content-Type instead (bench_peers.py: form bodies)
--   BENCH_AUTHORIZATION  value of the Authorization header ("Bearer <jwt>")
--
-- done() prints one machine-readable line, "BENCH_RESULT {json}", with exact counts and
-- latency percentiles in microseconds; bench_http.py reads it (and cross-checks wrk's
-- own "Requests/sec" line).

wrk.method = os.getenv("BENCH_METHOD") or "GET"

local body = os.getenv("BENCH_BODY")
if body ~= nil and body ~= "" then
  wrk.body = body
  wrk.headers["Content-Type"] = os.getenv("BENCH_CONTENT_TYPE") or "application/json"
end

local authorization = os.getenv("BENCH_AUTHORIZATION")
if authorization ~= nil and authorization ~= "" then
  wrk.headers["Authorization"] = authorization
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "bytes": %d, ' ..
    '"mean_us": %.1f, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency.mean, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max,
    e.connect, e.read, e.write, e.status, e.timeout))
end
