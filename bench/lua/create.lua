-- POST /internet-on-demand/connections: a 1 Mbps connection at the roomy location. With
-- IOD_BENCH_IDEMPOTENCY=1 each request carries a new Idempotency-Key, as the SDK's do.
dofile(os.getenv("IOD_BENCH_LUA_DIR") .. "/common.lua")

wrk.method = "POST"
wrk.headers["Authorization"] = "Bearer " .. bench.env("IOD_BENCH_TOKEN")
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"bandwidth": "1 Mbps", "locationId": "' .. bench.env("IOD_BENCH_LOCATION") ..
  '", "description": "benchmark"}'

function init(args)
  if bench.keyed() then
    bench.keyed_requests("POST", { "/internet-on-demand/connections" }, { wrk.body })
  end
end
