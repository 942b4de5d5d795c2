-- Mixed workload: reads, searches and creates of patient data, `$apply` and CDS Hooks calls,
-- weighted, with a bearer token (CDS calls go without: the bench server runs with CDS client
-- authentication off, as wrk cannot sign a client JWT per call).
-- usage: wrk -t2 -c50 -d60s -s bench/wrk/mixed.lua http://127.0.0.1:PORT -- IDS_FILE TOKEN|- NONCE [THINK_MS]
-- IDS_FILE lines are "patientId observationId" (preloaded); TOKEN "-" sends no Authorization;
-- THINK_MS > 0 makes each client pause about that long between requests (a paced, not saturating, load).
local common = dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "common.lua")

local pairs_, headers, cds_headers, prefix
local think = 0
local counter = 0
sent = {}

local function pick()
  return pairs_[math.random(#pairs_)]
end

local function observation(patient_id)
  return '{"resourceType":"Observation","status":"final","code":{"coding":[{"system":"http://loinc.org",' ..
    '"code":"91351-7"}]},"subject":{"reference":"Patient/' .. patient_id .. '"},"effectiveDateTime":"2026-11-20",' ..
    '"valueInteger":' .. (counter % 10) .. ',"identifier":[{"system":"urn:backpath:bench","value":"' .. prefix .. counter .. '"}]}'
end

local function uuid()
  return string.format("%08x-%04x-4%03x-a%03x-%012x", math.random(0, 0xffffffff), math.random(0, 0xffff),
    math.random(0, 0xfff), math.random(0, 0xfff), math.random(0, 0xffffffffffff))
end

-- A CDS patient-view call with its data in the prefetch (the EHR sends what it has), so the service
-- reads no store: what it costs is the pathway and the cards.
local function patient_view(patient_id)
  return '{"hook":"patient-view","hookInstance":"' .. uuid() .. '","context":{"userId":"Practitioner/bench",' ..
    '"patientId":"' .. patient_id .. '"},"prefetch":{"patient":{"resourceType":"Patient","id":"' .. patient_id ..
    '","birthDate":"1970-01-01"},"sbst-response":null,"sbst-scores":null,"lbp-assessments":null}}'
end

-- The mix: {name, weight, request builder}.
local MIX = {
  {"read-patient", 25, function(p) return wrk.format("GET", "/Patient/" .. p[1], headers) end},
  {"read-observation", 10, function(p) return wrk.format("GET", "/Observation/" .. p[2], headers) end},
  {"search-observations", 15, function(p)
    return wrk.format("GET", "/Observation?subject=Patient/" .. p[1] .. "&_count=10&_total=none", headers)
  end},
  {"search-patient", 10, function(p) return wrk.format("GET", "/Patient?_id=" .. p[1] .. "&_revinclude=Observation:subject&_count=5", headers) end},
  {"create-observation", 25, function(p) return wrk.format("POST", "/Observation", headers, observation(p[1])) end},
  {"apply-pathway", 10, function(p) return wrk.format("GET", "/PlanDefinition/nl-zel/$apply?subject=Patient/" .. p[1], headers) end},
  {"cds-patient-view", 5, function(p) return wrk.format("POST", "/cds-services/lbp-pathway", cds_headers, patient_view(p[1])) end},
}
local total_weight = 0
for _, row in ipairs(MIX) do total_weight = total_weight + row[2] end

function init(args)
  pairs_ = {}
  for _, line in ipairs(common.read_lines(assert(args[1], "usage: -- IDS_FILE TOKEN NONCE"))) do
    local patient_id, observation_id = line:match("^(%S+)%s+(%S+)$")
    pairs_[#pairs_ + 1] = {patient_id, observation_id}
  end
  headers = {["Content-Type"] = "application/fhir+json", ["Accept"] = "application/fhir+json"}
  if args[2] and args[2] ~= "-" then headers["Authorization"] = "Bearer " .. args[2] end
  cds_headers = {["Content-Type"] = "application/json", ["Accept"] = "application/json"}
  prefix = (args[3] or tostring(os.time())) .. "-" .. (tid or 0) .. "-"
  think = tonumber(args[4] or "0")
  math.randomseed(os.time() * 1000 + (tid or 0))
  for _, row in ipairs(MIX) do sent[row[1]] = 0 end
end

function delay()
  if think <= 0 then return 0 end
  return math.random(math.floor(think / 2), math.floor(think * 3 / 2))
end

function request()
  counter = counter + 1
  local roll = math.random(total_weight)
  for _, row in ipairs(MIX) do
    roll = roll - row[2]
    if roll <= 0 then
      sent[row[1]] = sent[row[1]] + 1
      return row[3](pick())
    end
  end
end

-- Per-kind request counts from every thread, as one more line for bench/run_mixed.py.
local threads = {}
local common_setup, common_done = setup, done

function setup(thread)
  common_setup(thread)
  threads[#threads + 1] = thread
end

function done(summary, latency, requests)
  common_done(summary, latency, requests)
  local parts = {}
  for _, row in ipairs(MIX) do
    local n = 0
    for _, thread in ipairs(threads) do n = n + ((thread:get("sent") or {})[row[1]] or 0) end
    parts[#parts + 1] = string.format('"%s":%d', row[1], n)
  end
  io.write("MIX {" .. table.concat(parts, ",") .. "}\n")
end
