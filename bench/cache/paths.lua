-- GET requests with a signed-in user's token, each to a path picked at random from the
-- lines of CACHE_PATHS (record URLs of the hot set, or the list pages); formatted once in
-- init(), so wrk spends little CPU per request. CACHE_TOKEN: the user's access token.
dofile(os.getenv("BENCH_LUA") .. "/common.lua")

local requests = {}

function init(args)
  seed_rng()
  local headers = {Authorization = "Bearer " .. os.getenv("CACHE_TOKEN")}
  for _, path in ipairs(read_lines(os.getenv("CACHE_PATHS"))) do
    requests[#requests + 1] = wrk.format("GET", path, headers)
  end
end

function request()
  return requests[math.random(#requests)]
end
