-- Read by id: GET /Patient/{id} for ids drawn at random from a preloaded list.
-- usage: wrk -t2 -c16 -d8s -s bench/wrk/read.lua http://127.0.0.1:PORT -- IDS_FILE
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local requests

function init(args)
  local ids = common.read_lines(assert(args[1], "usage: -- IDS_FILE"))
  requests = {}
  for i, id in ipairs(ids) do
    requests[i] = wrk.format("GET", "/Patient/" .. id, { ["Accept"] = "application/fhir+json" })
  end
  math.randomseed(os.time() * 1000 + (tid or 0))
end

function request()
  return requests[math.random(#requests)]
end
