-- Shared by every scenario: the tenant headers, ids to pick from, a tag per thread (for unique
-- names), and the first failure of each thread, printed at the end.
wrk.headers["X-Org-ID"] = os.getenv("BENCH_ORG")
wrk.headers["X-User-ID"] = os.getenv("BENCH_USER")
wrk.headers["Content-Type"] = "application/json"

local function split(list)
  local items = {}
  for item in string.gmatch(list or "", "[^,]+") do items[#items + 1] = item end
  return items
end

ids = split(os.getenv("BENCH_IDS"))
counter = 0
tag = "main"
first_failure = ""

local threads = {}
local started = os.time()

function setup(thread)
  thread:set("tag", started .. "-" .. #threads)
  threads[#threads + 1] = thread
end

function pick()
  return ids[math.random(#ids)]
end

function response(status, headers, body)
  if status >= 400 and first_failure == "" then
    first_failure = status .. " " .. string.sub(body or "", 1, 200)
  end
end

function done(summary, latency, requests)
  for _, thread in ipairs(threads) do
    local failure = thread:get("first_failure")
    if failure ~= "" then print("first failure: " .. failure) end
  end
end
