-- PUT /internet-on-demand/connections/{id}/bandwidth, round-robin over IOD_BENCH_IDS,
-- alternating between two tiers so that every request is a real change. With
-- IOD_BENCH_IDEMPOTENCY=1 each request carries a new Idempotency-Key, as the SDK's do.
dofile(os.getenv("IOD_BENCH_LUA_DIR") .. "/common.lua")

local ids = bench.split(bench.env("IOD_BENCH_IDS"))
wrk.headers["Authorization"] = "Bearer " .. bench.env("IOD_BENCH_TOKEN")
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local bodies = { '{"bandwidth": "200 Mbps"}', '{"bandwidth": "100 Mbps"}' }
  local paths, payloads = {}, {}
  -- An odd count of requests per id would give each id the same tier every time round.
  for round = 1, 2 do
    for i, id in ipairs(ids) do
      paths[#paths + 1] = "/internet-on-demand/connections/" .. id .. "/bandwidth"
      payloads[#payloads + 1] = bodies[(i + round) % 2 + 1]
    end
  end
  if bench.keyed() then
    bench.keyed_requests("PUT", paths, payloads)
    return
  end
  local requests = {}
  for i, path in ipairs(paths) do
    requests[i] = wrk.format("PUT", path, nil, payloads[i])
  end
  bench.rotate(requests)
end
