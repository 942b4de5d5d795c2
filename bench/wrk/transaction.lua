-- Transaction ingest: POST / with a transaction Bundle of ENTRIES new Patients (urn:uuid fullUrls,
-- unique identifiers), Prefer: return=minimal. resources/s = 2xx responses x ENTRIES / s.
-- usage: wrk -t2 -c4 -d8s -s bench/wrk/transaction.lua http://127.0.0.1:PORT -- [ENTRIES] [NONCE]
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local entries
local prefix
local counter = 0
local headers = {
  ["Content-Type"] = "application/fhir+json",
  ["Accept"] = "application/fhir+json",
  ["Prefer"] = "return=minimal",
}

function init(args)
  entries = tonumber(args[1] or "50")
  prefix = (args[2] or tostring(os.time())) .. "-" .. (tid or 0) .. "-"
  math.randomseed(os.time() * 1000 + (tid or 0))
end

local function uuid()
  return string.format("%08x-%04x-4%03x-%04x-%06x%06x", math.random(0, 0x7fffffff), math.random(0, 0xffff),
    math.random(0, 0xfff), 0x8000 + math.random(0, 0x3fff), math.random(0, 0xffffff), math.random(0, 0xffffff))
end

function request()
  local parts = {}
  for i = 1, entries do
    counter = counter + 1
    parts[i] = '{"fullUrl":"urn:uuid:' .. uuid() .. '","resource":' .. common.patient(prefix .. counter)
      .. ',"request":{"method":"POST","url":"Patient"}}'
  end
  local body = '{"resourceType":"Bundle","type":"transaction","entry":[' .. table.concat(parts, ",") .. "]}"
  return wrk.format("POST", "/", headers, body)
end
