-- PUT /internet-on-demand/connections/{id}/bandwidth, round-robin over IOD_BENCH_IDS,
-- alternating between two tiers so that every request is a real change.
dofile(os.getenv("IOD_BENCH_LUA_DIR") .. "/common.lua")

local ids = bench.split(bench.env("IOD_BENCH_IDS"))
wrk.headers["Authorization"] = "Bearer " .. bench.env("IOD_BENCH_TOKEN")
wrk.headers["Content-Type"] = "application/json"

function init(args)
  local bodies = { '{"bandwidth": "200 Mbps"}', '{"bandwidth": "100 Mbps"}' }
  local requests = {}
  -- An odd count of requests per id would give each id the same tier every time round.
  for round = 1, 2 do
    for i, id in ipairs(ids) do
      local path = "/internet-on-demand/connections/" .. id .. "/bandwidth"
      requests[#requests + 1] = wrk.format("PUT", path, nil, bodies[(i + round) % 2 + 1])
    end
  end
  bench.rotate(requests)
end
