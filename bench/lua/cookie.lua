-- GET of the URL given to wrk with a cookie (a portal page, signed in with its session).
dofile(os.getenv("IOD_BENCH_LUA_DIR") .. "/common.lua")

wrk.headers["Cookie"] = bench.env("IOD_BENCH_COOKIE")
