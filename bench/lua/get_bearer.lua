-- GET of the URL given to wrk (the list, with its query string) with a bearer token.
dofile(os.getenv("IOD_BENCH_LUA_DIR") .. "/common.lua")

wrk.headers["Authorization"] = "Bearer " .. bench.env("IOD_BENCH_TOKEN")
