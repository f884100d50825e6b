-- Small, realistic request bodies built as JSON text.
local M = {}

local fmt, random = string.format, math.random

local PAGES = { "/", "/pricing", "/products", "/blog", "/checkout", "/account", "/search" }
local SOURCES = { "google", "newsletter", "direct", "twitter", "partner" }
local CURRENCIES = { "EUR", "USD", "GBP" }
local SCREENS = { "home", "cart", "settings", "product", "onboarding" }

local function pick(list)
  return list[random(#list)]
end

local function price()
  return fmt("%d.%02d", random(1, 499), random(0, 99))
end

-- One event: {"name", "external_id", "data"} with a name-specific data object.
local MAKERS = {
  function()
    return "page_view", fmt('{"path":"%s/%d","referrer":"%s","duration_ms":%d}',
      pick(PAGES), random(1, 500), pick(SOURCES), random(50, 30000))
  end,
  function()
    return "product_viewed", fmt('{"product_id":"p%d","price":%s,"currency":"%s"}',
      random(1, 5000), price(), pick(CURRENCIES))
  end,
  function()
    return "add_to_cart", fmt('{"product_id":"p%d","quantity":%d,"price":%s,"currency":"%s"}',
      random(1, 5000), random(1, 5), price(), pick(CURRENCIES))
  end,
  function()
    return "purchase", fmt('{"order_id":"o%d","total":%s,"currency":"%s","items":%d,'
      .. '"coupon":null}', random(1, 1e9), price(), pick(CURRENCIES), random(1, 8))
  end,
  function()
    return "button_click", fmt('{"button":"cta_%d","screen":"%s","experiment":"%s"}',
      random(1, 40), pick(SCREENS), random(2) == 1 and "A" or "B")
  end,
  function()
    return "search", fmt('{"query":"item %d","results":%d,"filters":{"in_stock":%s}}',
      random(1, 10000), random(0, 200), random(2) == 1 and "true" or "false")
  end,
}

-- With `id_slot`, the event has a message id slot (`%s`, for string.format) to fill.
function M.event(users, id_slot)
  local name, data = MAKERS[random(#MAKERS)]()
  if not id_slot then
    return fmt('{"name":"%s","external_id":"u%d","data":%s}', name, random(users), data)
  end
  assert(not data:find("%", 1, true))
  return fmt('{"name":"%s","external_id":"u%d","message_id":"%%s","data":%s}', name,
    random(users), data)
end

-- A JSON array of `count` events for users drawn from u1..u<users> (`id_slot`: as M.event).
function M.events_body(count, users, id_slot)
  local parts = {}
  for i = 1, count do
    parts[i] = M.event(users, id_slot)
  end
  return "[" .. table.concat(parts, ",") .. "]"
end

-- An identify body for a user drawn from u1..u<users>.
function M.identify_body(users)
  local n = random(users)
  return fmt('{"external_id":"u%d","email":"u%d@example.com","data":{"plan":"pro","n":%d}}',
    n, n, random(1, 1000000))
end

return M
