dofile(os.getenv("BENCH_LUA_DIR") .. "/tenant.lua")
request = function()
  return wrk.format("GET", "/tools/" .. pick())
end
