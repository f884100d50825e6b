-- Scale-mode preload: POST /api/client/events with large bodies, stopping each thread
-- once it has had LIMIT successful responses (the wrk duration bounds the run as well).
-- wrk args: KEY EVENTS_PER_BODY USERS POOL LIMIT [ids]
-- With "ids", every event has a new random message id (events.lua's "ids").
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")
local gen = dofile(dir .. "gen.lua")

local thread_no = 0
function setup(thread)
  thread_no = thread_no + 1
  thread:set("seed", thread_no)
end

local limit, ok = math.huge, 0

function init(args)
  common.seed(seed)
  local key = assert(args[1], "usage: preload.lua KEY EVENTS USERS POOL LIMIT [ids]")
  local per_body = tonumber(args[2]) or 1000
  local users = tonumber(args[3]) or 10000
  local size = tonumber(args[4]) or 32
  limit = tonumber(args[5]) or math.huge
  request = common.events_request(key, size, per_body, users, args[6] == "ids", gen.events_body)
end

function response(status, headers, body)
  if status >= 200 and status < 300 then
    ok = ok + 1
    if ok >= limit then wrk.thread:stop() end
  end
end

function done(summary, latency, requests)
  common.report(summary, latency)
end
