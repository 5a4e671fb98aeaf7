dofile(os.getenv("BENCH_LUA_DIR") .. "/tenant.lua")
request = function()
  counter = counter + 1
  local body = string.format(
    '{"steps":[{"id":"fetch","type":"action","n":%d},{"id":"notify","type":"action"}]}', counter)
  return wrk.format("PUT", "/flows/" .. pick(), nil, body)
end
