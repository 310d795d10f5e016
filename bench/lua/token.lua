-- POST /oauth2/token: client_credentials with HTTP Basic client authentication.
dofile(os.getenv("IOD_BENCH_LUA_DIR") .. "/common.lua")

wrk.method = "POST"
wrk.headers["Authorization"] = "Basic " .. bench.env("IOD_BENCH_BASIC")
wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
wrk.body = "grant_type=client_credentials"
