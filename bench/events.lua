-- POST /api/client/events with a JSON array of events for random users.
-- wrk args: KEY [EVENTS_PER_BODY=10] [USERS=10000] [POOL=4000] [ids]
-- With "ids", each event has a message id, a new random UUID on every request (as the SDKs
-- send them): the bodies are built per request from POOL templates.
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
  local key = assert(args[1], "usage: events.lua KEY [EVENTS] [USERS] [POOL] [ids]")
  local per_body = tonumber(args[2]) or 10
  local users = tonumber(args[3]) or 10000
  local size = tonumber(args[4]) or 4000
  request = common.events_request(key, size, per_body, users, args[5] == "ids", gen.events_body)
end

function done(summary, latency, requests)
  common.report(summary, latency)
end
