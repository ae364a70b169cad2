-- wrk script for scripts/bench-slack-acks.sh: POSTs pre-signed Slack slash commands to
-- BENCH_PATH (default /slack/commands), each body once while they last (one trigger_id each:
-- the file holds more than the phase sends), then from the start again.
--
--   BENCH_SIGNED    file of "timestamp<TAB>v0=signature<TAB>form body" lines (made by
--                   scripts/bench/sign.py shortly before the run: Slack signatures are only
--                   accepted within 5 minutes of their timestamp)
--   BENCH_DELAY_MS  optional: wait this long on average (uniformly 0 to twice this) after each
--                   response before the next request on the same connection — a paced
--                   (closed-loop) fixed rate of about connections * 1000 / (delay + latency)
--                   requests/s
--
-- done() prints one machine-readable RESULT line (latencies in microseconds).

local reqs = {}
local i = 0

function init(args)
  local path = os.getenv("BENCH_SIGNED")
  for line in io.lines(path) do
    local ts, sig, body = line:match("^(%d+)\t(%S+)\t(.*)$")
    if ts then
      reqs[#reqs + 1] = wrk.format("POST", os.getenv("BENCH_PATH") or "/slack/commands", {
        ["Content-Type"] = "application/x-www-form-urlencoded",
        ["X-Slack-Request-Timestamp"] = ts,
        ["X-Slack-Signature"] = sig,
      }, body)
    end
  end
  if #reqs == 0 then
    error("no signed requests in " .. tostring(path))
  end
  i = 0
end

function request()
  i = i % #reqs + 1
  return reqs[i]
end

-- The pause is drawn uniformly from [0, 2 * BENCH_DELAY_MS] (same mean): with a fixed pause the
-- connections stay in step and fire in bursts of one request each at the same instant, which
-- measures a burst, not a rate; drawn pauses spread them out like independent callers.
local d = tonumber(os.getenv("BENCH_DELAY_MS") or "0") or 0
if d > 0 then
  function delay()
    return math.random(0, 2 * d)
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT requests=%d duration_us=%d bytes=%d status_errors=%d connect_errors=%d read_errors=%d write_errors=%d timeouts=%d p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d mean_us=%.1f\n",
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    latency.max, latency.mean))
end
