-- Shared by roost.lua and parse.lua: thread ids, per-thread random seeds, data files, the
-- six workloads built from each one's request makers, and a done() that prints the
-- response statuses some workloads count (one JSON line).
threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  threads[#threads + 1] = thread
end

function seed_rng()
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
  for _ = 1, 10 do math.random() end
end

function read_lines(path)
  local t = {}
  local f = assert(io.open(path, "r"), "cannot open " .. tostring(path))
  for line in f:lines() do
    if #line > 0 then t[#t + 1] = line end
  end
  f:close()
  assert(#t > 0, "no lines in " .. path)
  return t
end

function words(line)
  local t = {}
  for w in line:gmatch("%S+") do t[#t + 1] = w end
  return t
end

function urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return string.format("%%%02X", string.byte(c)) end))
end

-- The request maker of BENCH_WORKLOAD from a peer's parts: read() for (a), its prepared
-- lists, creates and logins for (b), (c), (d), update() for (e); (f) is 80% (a), 15% (b),
-- 5% (c). The lists are filled in place by init(), after this runs.
function workload_handler(workload, read, lists, creates, logins, update)
  local function pick(list)
    return list[math.random(#list)]
  end
  local handlers = {
    a = read,
    b = function() return pick(lists) end,
    c = function() return pick(creates) end,
    d = function() return pick(logins) end,
    e = update,
    f = function()
      local r = math.random()
      if r < 0.80 then return read() end
      if r < 0.95 then return pick(lists) end
      return pick(creates)
    end,
  }
  assert(handlers[workload], "BENCH_WORKLOAD must be one of a b c d e f")
  return handlers[workload]
end

-- Responses by status, filled by the response() of the workloads that define one.
statuses = {}

function count_status(status)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total, any = {}, false
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses") or {}) do
      total[status] = (total[status] or 0) + n
      any = true
    end
  end
  if not any then return end
  local parts = {}
  for status, n in pairs(total) do
    parts[#parts + 1] = string.format('"%d":%d', status, n)
  end
  io.write("BENCH_STATUS {" .. table.concat(parts, ",") .. "}\n")
end
