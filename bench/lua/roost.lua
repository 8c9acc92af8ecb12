-- Roost's workloads; BENCH_WORKLOAD picks one:
--   a  GET one record by id as its owner (random (token, id) pair)
--   b  list filter=owner = "<id>" limit 20 as that owner (random owner)
--   c  create a record as a random user
--   d  login (email + password) of a random user
--   e  PATCH with If-Match as the owner; each thread owns its own records and tracks their
--      versions from the responses, so a record is never patched twice at once: a 412
--      (stale If-Match) means Roost lost or misreported a version, and is counted
--   f  mixed: 80% a, 15% b, 5% c
-- Files in BENCH_DATA: users.txt ("id token email password"), records.txt ("user id"),
-- versions.txt ("user id version", for e). Requests that do not vary are formatted once
-- (in init(), or on first use for the 10,000 reads), so wrk spends little CPU per request.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local data = os.getenv("BENCH_DATA")
local workload = os.getenv("BENCH_WORKLOAD")
local thread_total = tonumber(os.getenv("BENCH_THREADS") or "2")
local RECORDS = "/api/collections/items/records"

local users, reads, lists, creates, logins = {}, {}, {}, {}, {}
local mine, by_id, free = {}, {}, {}

local function load_users()
  for _, line in ipairs(read_lines(data .. "/users.txt")) do
    local w = words(line)
    users[#users + 1] = {id = w[1], auth = "Bearer " .. w[2], email = w[3], password = w[4]}
  end
end

local function get(path, user)
  return wrk.format("GET", path, {Authorization = user.auth})
end

local function post(path, user, body)
  local headers = {["Content-Type"] = "application/json"}
  if user then headers.Authorization = user.auth end
  return wrk.format("POST", path, headers, body)
end

local records = {}

local function prepare_reads()
  records = read_lines(data .. "/records.txt")
end

local function read()
  -- a random (owner's token, record id) pair, formatted on first use and kept
  local i = math.random(#records)
  local request = reads[i]
  if not request then
    local user, id = records[i]:match("^(%d+) (%S+)$")
    request = get(RECORDS .. "/" .. id, users[tonumber(user)])
    reads[i] = request
  end
  return request
end

local function prepare_lists()
  for _, user in ipairs(users) do
    local filter = urlencode('owner = "' .. user.id .. '"')
    lists[#lists + 1] = get(RECORDS .. "?filter=" .. filter .. "&limit=20", user)
  end
end

local function prepare_creates()
  for i, user in ipairs(users) do
    local body = string.format('{"score":%d,"title":"created by wrk, user %d"}', i, i)
    creates[#creates + 1] = post(RECORDS, user, body)
  end
end

local function prepare_logins()
  for _, user in ipairs(users) do
    local body = string.format('{"email":"%s","password":"%s"}', user.email, user.password)
    logins[#logins + 1] = post("/api/auth/login", nil, body)
  end
end

local function prepare_patches()
  for i, line in ipairs(read_lines(data .. "/versions.txt")) do
    if (i - 1) % thread_total == (tid or 1) - 1 then
      local w = words(line)
      mine[#mine + 1] = {user = users[tonumber(w[1])], id = w[2], version = tonumber(w[3])}
      by_id[w[2]] = #mine
      free[#free + 1] = #mine
    end
  end
end

local function patch()
  local n, k = #free, nil
  if n > 0 then
    local j = math.random(n)
    k = free[j]
    free[j] = free[n]
    free[n] = nil
  else
    k = math.random(#mine) -- every record in flight: cannot happen with thousands per thread
  end
  local r = mine[k]
  local headers = {
    Authorization = r.user.auth,
    ["Content-Type"] = "application/json",
    ["If-Match"] = '"' .. r.version .. '"',
  }
  local body = string.format('{"score":%d}', math.random(0, 9999))
  return wrk.format("PATCH", RECORDS .. "/" .. r.id, headers, body)
end

local prepare = {
  a = {prepare_reads},
  b = {prepare_lists},
  c = {prepare_creates},
  d = {prepare_logins},
  e = {prepare_patches},
  f = {prepare_reads, prepare_lists, prepare_creates},
}
local handler = workload_handler(workload, read, lists, creates, logins, patch)

function init(args)
  seed_rng()
  load_users()
  for _, step in ipairs(prepare[workload]) do step() end
end

function request()
  return handler()
end

if workload == "e" then
  -- The answer carries the record (200) or, for a 412, the current one in "current":
  -- either way its id and version; the record goes back to this thread's free list.
  function response(status, headers, body)
    count_status(status)
    local id = body and body:match('"id":"([^"]+)"')
    local k = id and by_id[id]
    if k then
      local version = body:match('"version":(%d+)')
      if version then mine[k].version = tonumber(version) end
      free[#free + 1] = k
    end
  end
end
