// Dify's Node SDK (npm `dify-client`, pinned in tests/node/package.json)
// against a workflow with code nodes (tests/fixtures/dsl/workflow-code.yml):
// `runWorkflow` blocking and streaming; the JavaScript and the Python code
// node give the same outputs, and the code nodes' node_finished events
// carry their inputs and outputs.
//
// Run by tests/tests/code_nodes.rs:
//
//   node tests/node/code_check.mjs BASE_URL KEY USER
//
// Prints one JSON line: {"checks": [{"name", "ok", "detail"}], "seen": {...}}.

import { CompletionClient } from "dify-client";

const results = [];
const seen = {};
const KEYS = ["code", "severity", "over", "detail", "words", "thresholds", "flags", "events"];

function check(name, ok, detail = "") {
  const text = typeof detail === "string" ? detail : JSON.stringify(detail);
  results.push({ name, ok: Boolean(ok), detail: ok ? "" : String(text).slice(0, 2000) });
  return Boolean(ok);
}

async function sseEvents(stream) {
  let s = "";
  for await (const chunk of stream) s += chunk.toString("utf8");
  return s
    .split("\n\n")
    .map((block) => block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n"))
    .filter((d) => d.length > 0)
    .map((d) => JSON.parse(d));
}

const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function main() {
  const [base, key, user] = process.argv.slice(2);
  if (!user) {
    console.error("usage: code_check.mjs BASE_URL KEY USER");
    process.exit(1);
  }
  const wf = new CompletionClient(key, base);
  const inputs = { fault: "E17:VALVE2:LEAK:3.25", limit: 3 };
  const r = await wf.runWorkflow(inputs, user, false);
  check("blocking: HTTP 200", r.status === 200, r.status);
  const out = r.data?.data?.outputs ?? {};
  check("blocking: succeeded", r.data?.data?.status === "succeeded", r.data);
  for (const k of KEYS) check(`blocking: js_${k} == py_${k}`, same(out[`js_${k}`], out[`py_${k}`]), out);
  check("blocking: severity", out.js_severity === 17, out);
  check("blocking: detail", same(out.js_detail, { device: "VALVE2", kind: "leak", value: 3.25 }), out);
  check("blocking: summary", out.summary === "VALVE2 leak at 3.25 (severity 17)", out);
  seen.blocking_run_id = r.data?.workflow_run_id;

  const s = await wf.runWorkflow(inputs, user, true);
  const events = await sseEvents(s.data);
  const names = events.map((e) => e.event);
  check("streaming: ends with workflow_finished", names[names.length - 1] === "workflow_finished", names);
  const codeNodes = events.filter((e) => e.event === "node_finished" && e.data?.node_type === "code");
  check("streaming: five code nodes finished", codeNodes.length === 5, names);
  check("streaming: each succeeded", codeNodes.every((e) => e.data?.status === "succeeded"), codeNodes);
  const js = codeNodes.find((e) => e.data?.title === "Parse fault (JavaScript)");
  check("streaming: the JavaScript node's inputs", same(js?.data?.inputs, inputs), js);
  check("streaming: the JavaScript node's outputs", js?.data?.outputs?.code === "E17", js);
  const fin = events[events.length - 1];
  check("streaming: same outputs as blocking", same(fin?.data?.outputs, out), fin);
  seen.streaming_run_id = events[0]?.workflow_run_id;
}

main()
  .then(() => console.log(JSON.stringify({ checks: results, seen })))
  .catch((err) => {
    console.error(err?.response?.data ?? err);
    process.exit(1);
  });
