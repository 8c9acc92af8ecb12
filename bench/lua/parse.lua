-- The same workloads against Parse Server's REST API (request shapes of the Parse peer's
-- own wrk scripts, ../shared/peers/parse-server/lua/), with the REST API key and no session:
--   a  GET /parse/classes/Item/<id>, id random among the seeded objects
--   b  GET /parse/classes/Item?where={"owner":"owner_N"}&limit=20, N random 0..99
--   c  POST /parse/classes/Item {"owner":"writer_N",...}
--   d  POST /parse/login {"username":"user_N","password":...} (bcrypt verify + _Session row)
--   e  PUT /parse/classes/Item/<id> {"score":n}: Parse's REST API has no If-Match
--   f  mixed: 80% a, 15% b, 5% c
-- Env: BENCH_WORKLOAD, BENCH_DATA (ids.txt, users.txt "username password"), PARSE_APP_ID,
-- PARSE_REST_KEY, PARSE_PREFIX (the mount path, /parse).
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local data = os.getenv("BENCH_DATA")
local workload = os.getenv("BENCH_WORKLOAD")
local prefix = os.getenv("PARSE_PREFIX") or "/parse"
local ITEMS = prefix .. "/classes/Item"

local ids, reads, lists, creates, logins = {}, {}, {}, {}, {}

local function headers(json)
  local h = {
    ["X-Parse-Application-Id"] = os.getenv("PARSE_APP_ID"),
    ["X-Parse-REST-API-Key"] = os.getenv("PARSE_REST_KEY"),
  }
  if json then h["Content-Type"] = "application/json" end
  return h
end

local function read()
  -- a random object id, its request formatted on first use and kept
  local i = math.random(#ids)
  local request = reads[i]
  if not request then
    request = wrk.format("GET", ITEMS .. "/" .. ids[i], headers(false))
    reads[i] = request
  end
  return request
end

local function prepare_lists()
  for n = 0, 99 do
    local where = urlencode('{"owner":"owner_' .. n .. '"}')
    lists[#lists + 1] = wrk.format("GET", ITEMS .. "?where=" .. where .. "&limit=20", headers(false))
  end
end

local function prepare_creates()
  for n = 0, 99 do
    local body = string.format('{"owner":"writer_%d","score":%d,"title":"created by wrk"}', n, n)
    creates[#creates + 1] = wrk.format("POST", ITEMS, headers(true), body)
  end
end

local function prepare_logins()
  for _, line in ipairs(read_lines(data .. "/users.txt")) do
    local w = words(line)
    local body = string.format('{"username":"%s","password":"%s"}', w[1], w[2])
    logins[#logins + 1] = wrk.format("POST", prefix .. "/login", headers(true), body)
  end
end

local put_headers = nil

local function update()
  put_headers = put_headers or headers(true)
  local body = string.format('{"score":%d}', math.random(0, 9999))
  return wrk.format("PUT", ITEMS .. "/" .. ids[math.random(#ids)], put_headers, body)
end

local prepare = {
  a = {},
  b = {prepare_lists},
  c = {prepare_creates},
  d = {prepare_logins},
  e = {},
  f = {prepare_lists, prepare_creates},
}
local handler = workload_handler(workload, read, lists, creates, logins, update)

function init(args)
  seed_rng()
  ids = read_lines(data .. "/ids.txt")
  for _, step in ipairs(prepare[workload]) do step() end
end

function request()
  return handler()
end
