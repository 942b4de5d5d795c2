-- $process-message: POST a DK new-referral message whose MessageHeader id, referral id and CPR
-- are unique per request (each is a new message, processed and stored, never a duplicate).
-- usage: wrk -t2 -c8 -d10s -s bench/wrk/message.lua http://127.0.0.1:PORT -- NONCE TEMPLATE_PATH
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local prefix
local template
local counter = 0

function init(args)
  prefix = (args[1] or tostring(os.time())) .. "-" .. (tid or 0) .. "-"
  template = common.read_file(args[2])
end

function request()
  counter = counter + 1
  local n = prefix .. counter
  local cpr = string.format("99%08d", ((tid or 0) * 10000000 + counter) % 100000000)
  local body = template:gsub("{{MID}}", "m-" .. n)
  body = body:gsub("{{RID}}", "r-" .. n)
  body = body:gsub("{{CPR}}", cpr)
  return wrk.format("POST", "/$process-message", common.json_headers, body)
end
