-- Create: POST /Patient with a ~1.2 KB Patient whose identifier is unique per request.
-- usage: wrk -t2 -c16 -d8s -s bench/wrk/create.lua http://127.0.0.1:PORT -- [NONCE]
-- NONCE keeps identifiers unique across runs against the same database.
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local prefix
local counter = 0

function init(args)
  prefix = (args[1] or tostring(os.time())) .. "-" .. (tid or 0) .. "-"
end

function request()
  counter = counter + 1
  return wrk.format("POST", "/Patient", common.json_headers, common.patient(prefix .. counter))
end
