-- GET /internet-on-demand/connections/{id}, round-robin over IOD_BENCH_IDS, with a bearer
-- token (the baseline ignores it, but receives the same bytes).
dofile(os.getenv("IOD_BENCH_LUA_DIR") .. "/common.lua")

local ids = bench.split(bench.env("IOD_BENCH_IDS"))
wrk.headers["Authorization"] = "Bearer " .. bench.env("IOD_BENCH_TOKEN")

function init(args)
  local requests = {}
  for i, id in ipairs(ids) do
    requests[i] = wrk.format("GET", "/internet-on-demand/connections/" .. id)
  end
  bench.rotate(requests)
end
