-- GET /tools/{id} of a random tool, authenticated by an API key (BENCH_KEY) instead of the
-- tenant headers: the server looks the key up by its digest before the tenant query.
dofile(os.getenv("BENCH_LUA_DIR") .. "/tenant.lua")
wrk.headers["X-Org-ID"] = nil
wrk.headers["X-User-ID"] = nil
wrk.headers["Authorization"] = "Bearer " .. os.getenv("BENCH_KEY")
request = function()
  return wrk.format("GET", "/tools/" .. pick())
end
