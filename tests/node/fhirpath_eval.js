// Evaluates SDC expressions with fhirpath.js (the npm `fhirpath` package), for the differential
// tests: reads {cases: [{resource, questionnaire, qitem, variables: [[name, expr]], expression}]}
// as JSON on stdin and writes {results: [values | {error}]} to stdout. Variables are evaluated in
// order, each seeing the earlier ones, as SDC scopes them.
"use strict";
const fhirpath = require("fhirpath");
const r4 = require("fhirpath/fhir-context/r4");

// Each expression is parsed once (fhirpath.compile), as the cases repeat the same few.
const compiled = new Map();
function run(expression, resource, env) {
  if (!compiled.has(expression)) compiled.set(expression, fhirpath.compile(expression, r4));
  return compiled.get(expression)(resource, env);
}

function evaluateCase(c) {
  const env = { resource: c.resource, questionnaire: c.questionnaire };
  if (c.qitem) env.qitem = c.qitem;
  for (const [name, expression] of c.variables || []) {
    env[name] = run(expression, c.resource, env);
  }
  return run(c.expression, c.resource, env);
}

let input = "";
process.stdin.setEncoding("utf8");
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const { cases } = JSON.parse(input);
  const results = cases.map((c) => {
    try {
      return evaluateCase(c);
    } catch (error) {
      return { error: String(error && error.message ? error.message : error) };
    }
  });
  process.stdout.write(JSON.stringify({ results }));
});
