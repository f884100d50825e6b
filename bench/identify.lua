-- POST /api/client/identify for random users.
-- wrk args: KEY [USERS=100000] [POOL=4000]
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local gen = dofile(dir .. "gen.lua")

local thread_no = 0
function setup(thread)
  thread_no = thread_no + 1
  thread:set("seed", thread_no)
end

function init(args)
  common.seed(seed)
  local key = assert(args[1], "usage: identify.lua KEY [USERS] [POOL]")
  local users = tonumber(args[2]) or 100000
  local size = tonumber(args[3]) or 4000
  request = common.pool("/api/client/identify", key, size, function()
    return gen.identify_body(users)
  end)
end

function done(summary, latency, requests)
  common.report(summary, latency)
end
