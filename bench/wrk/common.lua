-- Shared by the bench/wrk scripts (loaded with dofile): thread numbering, the Patient template,
-- and the one machine-readable result line that bench/run_core.py parses.
--
-- wrk runs one Lua state per thread plus one for setup/done; `setup` numbers the threads
-- (global `tid`, 0-based, visible in each thread's init) so scripts can make unique values.
local common = {}

common.dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"

function common.read_file(path)
  local f = assert(io.open(path, "rb"), "cannot open " .. path)
  local text = f:read("*a")
  f:close()
  return text
end

function common.read_lines(path)
  local lines = {}
  for line in io.lines(path) do
    if line ~= "" then lines[#lines + 1] = line end
  end
  assert(#lines > 0, "no lines in " .. path)
  return lines
end

-- A ~1.2 KB Patient (bench/wrk/patient.json) whose identifier values are `ident`.
common.template = common.read_file(common.dir .. "patient.json"):gsub("%s+$", "")

function common.patient(ident)
  return (common.template:gsub("{{IDENT}}", ident))
end

-- The same Patient with a logical id as its first element (for PUT bodies and PUT entries).
function common.patient_with_id(id, ident)
  return '{"id":"' .. id .. '",' .. common.patient(ident):sub(2)
end

common.json_headers = {
  ["Content-Type"] = "application/fhir+json",
  ["Accept"] = "application/fhir+json",
}

local threads = 0
function setup(thread)
  thread:set("tid", threads)
  threads = threads + 1
end

-- Non-2xx is wrk's errors.status (responses with status > 399; nothing here redirects).
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests":%d,"duration_us":%d,"bytes":%d,"non2xx":%d,"connect_errors":%d,' ..
    '"read_errors":%d,"write_errors":%d,"timeouts":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean))
end

return common
