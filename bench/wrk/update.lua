-- Update: PUT /Patient/{id} (the server bumps the version) over preloaded ids.
-- usage: wrk -t2 -c16 -d8s -s bench/wrk/update.lua http://127.0.0.1:PORT -- IDS_FILE THREADS [NONCE]
-- Thread t takes the ids i with (i - 1) % THREADS == t and cycles through them in order, so no
-- two requests on one id are ever in flight together (as long as each thread has more ids than
-- connections): no version conflicts by construction. Each request sets a new phone number
-- (NONCE + a counter), so every PUT is a real change (an identical body may write no version);
-- the identifier stays the id, as preloaded.
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local PHONE = "+31 20 555 0123"
local heads, tails, paths = {}, {}, {}
local prefix
local counter = 0

function init(args)
  local ids = common.read_lines(assert(args[1], "usage: -- IDS_FILE THREADS [NONCE]"))
  local threads = tonumber(args[2] or "1")
  prefix = "+31 6 " .. (args[3] or tostring(os.time())) .. "-" .. (tid or 0) .. "-"
  for i, id in ipairs(ids) do
    if (i - 1) % threads == (tid or 0) then
      local body = common.patient_with_id(id, id)
      local at = assert(body:find(PHONE, 1, true), "patient.json has no phone " .. PHONE)
      paths[#paths + 1] = "/Patient/" .. id
      heads[#heads + 1] = body:sub(1, at - 1)
      tails[#tails + 1] = body:sub(at + #PHONE)
    end
  end
  assert(#paths > 0, "thread " .. tostring(tid) .. " has no ids")
end

function request()
  local i = counter % #paths + 1
  counter = counter + 1
  return wrk.format("PUT", paths[i], common.json_headers, heads[i] .. prefix .. counter .. tails[i])
end
