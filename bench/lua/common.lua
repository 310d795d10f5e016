-- Shared by the benchmark scripts (loaded with dofile): settings from the environment that
-- bench/run.py sets, and one machine-readable summary line at the end of a run.

bench = {}

function bench.env(name)
  local value = os.getenv(name)
  if value == nil or value == "" then
    error(name .. " is not set: run the benchmark through bench/run.py")
  end
  return value
end

function bench.split(text)
  local items = {}
  for item in string.gmatch(text, "[^,]+") do
    items[#items + 1] = item
  end
  return items
end

-- wrk calls init() in each thread after it has set the Host header, so whole requests are
-- formatted there, once, and request() only picks the next one.
function bench.rotate(requests)
  local n = 0
  function request()
    n = n + 1
    return requests[n % #requests + 1]
  end
end

function bench.keyed()
  return os.getenv("IOD_BENCH_IDEMPOTENCY") == "1"
end

-- Requests formatted one by one, each with an Idempotency-Key of its own: a random prefix
-- per thread (wrk's threads share no state) and a counter.
function bench.keyed_requests(method, paths, bodies)
  local f = io.open("/dev/urandom", "rb")
  local prefix = string.gsub(f:read(8), ".", function(c) return string.format("%02x", c:byte()) end)
  f:close()
  local n = 0
  function request()
    n = n + 1
    local i = n % #paths + 1
    local headers = {}
    for k, v in pairs(wrk.headers) do
      headers[k] = v
    end
    headers["Idempotency-Key"] = "bench-" .. prefix .. "-" .. n
    return wrk.format(method, paths[i], headers, bodies[i])
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p90_us": %d, ' ..
    '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "errors_connect": %d, ' ..
    '"errors_read": %d, "errors_write": %d, "errors_status": %d, "errors_timeout": %d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write,
    e.status, e.timeout))
end
