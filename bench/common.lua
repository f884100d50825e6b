-- Helpers shared by the wrk scripts: a pool of pre-formatted requests and the JSON report.
local M = {}

-- Seed each wrk thread differently so threads draw different users.
function M.seed(salt)
  salt = tonumber(salt) or 0
  math.randomseed(os.time() * 1000 + salt)
  for _ = 1, 10 do math.random() end
end

-- Build `size` requests with make_body() and return a request() that cycles through them.
local function json_headers(key)
  return {
    ["Authorization"] = "Bearer " .. key,
    ["Content-Type"] = "application/json",
  }
end

function M.pool(path, key, size, make_body)
  local headers = json_headers(key)
  local reqs = {}
  for i = 1, size do
    reqs[i] = wrk.format("POST", path, headers, make_body())
  end
  local i = 0
  return function()
    i = i % size + 1
    return reqs[i]
  end
end

-- Like pool(), but each request is its template with fresh values: fill(template) gives the
-- body (for values that must differ on every request, such as message ids).
function M.fresh_pool(path, key, size, make_template, fill)
  local headers = json_headers(key)
  local templates = {}
  for i = 1, size do
    templates[i] = make_template()
  end
  local i = 0
  return function()
    i = i % size + 1
    return wrk.format("POST", path, headers, fill(templates[i]))
  end
end

-- A random UUID (version 4), as the SDKs give each event for its message id.
function M.uuid4()
  local r = math.random
  return string.format("%08x-%04x-4%03x-%04x-%06x%06x", r(0, 0x7fffffff) * 2 + r(0, 1),
    r(0, 0xffff), r(0, 0xfff), r(0, 0x3fff) + 0x8000, r(0, 0xffffff), r(0, 0xffffff))
end

-- request() for POST /api/client/events: bodies of `per_body` events for users drawn from
-- u1..u<users>, cycling through `size` of them; with `ids`, each event has a message id, a new
-- random UUID on every request (as the SDKs send them). `make_body(per_body, users, id_slot)`
-- builds a body (gen.events_body).
function M.events_request(key, size, per_body, users, ids, make_body)
  local path = "/api/client/events"
  if not ids then
    return M.pool(path, key, size, function()
      return make_body(per_body, users)
    end)
  end
  local values = {}
  return M.fresh_pool(path, key, size, function()
    return make_body(per_body, users, true)
  end, function(template)
    for i = 1, per_body do
      values[i] = M.uuid4()
    end
    return string.format(template, unpack(values, 1, per_body))
  end)
end

-- Print one machine-readable line that bench/run.py parses (latencies in microseconds).
function M.report(summary, latency)
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"duration_us":%.0f,"requests":%.0f,"bytes":%.0f,'
      .. '"errors":{"connect":%.0f,"read":%.0f,"write":%.0f,"status":%.0f,"timeout":%.0f},'
      .. '"latency_us":{"min":%.0f,"mean":%.1f,"max":%.0f,"p50":%.0f,"p90":%.0f,"p95":%.0f,'
      .. '"p99":%.0f,"p999":%.0f}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9)))
end

return M
