-- A GET of BENCH_PATH with the tenant headers.
dofile(os.getenv("BENCH_LUA_DIR") .. "/tenant.lua")
request = function()
  return wrk.format("GET", os.getenv("BENCH_PATH"))
end
