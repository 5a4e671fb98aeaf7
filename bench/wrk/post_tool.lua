dofile(os.getenv("BENCH_LUA_DIR") .. "/tenant.lua")
request = function()
  counter = counter + 1
  local body = string.format(
    '{"name":"bench-%s-%d","baseUrl":"https://api.example.com/v1","authType":"bearer"}',
    tag, counter)
  return wrk.format("POST", "/tools", nil, body)
end
