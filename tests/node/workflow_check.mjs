// Dify's Node SDK (npm `dify-client`, pinned in tests/node/package.json)
// against edgeaid's DSL apps: `runWorkflow` (blocking and streaming) on a
// workflow app, and `createChatMessage` (blocking and streaming) on a
// chatflow (advanced-chat) app, with its conversation continued.
//
// Run by tests/tests/workflow_sdk.rs:
//
//   node tests/node/workflow_check.mjs BASE_URL WORKFLOW_KEY CHATFLOW_KEY USER
//
// The workflow app is tests/fixtures/dsl/workflow-llm.yml (input `question`,
// output `answer`); the chatflow is tests/fixtures/dsl/chatflow.yml.
// Prints one JSON line: {"checks": [{"name", "ok", "detail"}], "seen": {...}}.

import { ChatClient, CompletionClient } from "dify-client";

const results = [];
const seen = {};
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const isUuid = (s) => typeof s === "string" && UUID_RE.test(s);

function check(name, ok, detail = "") {
  const text = typeof detail === "string" ? detail : JSON.stringify(detail);
  results.push({ name, ok: Boolean(ok), detail: ok ? "" : String(text).slice(0, 2000) });
  return Boolean(ok);
}

/** The `data:` events of an SSE body, parsed, in order. */
async function sseEvents(stream) {
  let s = "";
  for await (const chunk of stream) s += chunk.toString("utf8");
  return s
    .split("\n\n")
    .map((block) => block.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n"))
    .filter((d) => d.length > 0)
    .map((d) => JSON.parse(d));
}

async function main() {
  const [base, workflowKey, chatflowKey, user] = process.argv.slice(2);
  if (!user) {
    console.error("usage: workflow_check.mjs BASE_URL WORKFLOW_KEY CHATFLOW_KEY USER");
    process.exit(1);
  }
  const wf = new CompletionClient(workflowKey, base);
  const r = await wf.runWorkflow({ question: "What is a PLC?" }, user, false);
  check("runWorkflow blocking: HTTP 200", r.status === 200, r.status);
  check("runWorkflow blocking: succeeded", r.data?.data?.status === "succeeded", r.data);
  check("runWorkflow blocking: ids", isUuid(r.data?.workflow_run_id) && isUuid(r.data?.task_id), r.data);
  check("runWorkflow blocking: answer", typeof r.data?.data?.outputs?.answer === "string" && r.data.data.outputs.answer.length > 0, r.data);
  seen.blocking_run_id = r.data?.workflow_run_id;

  const s = await wf.runWorkflow({ question: "Name a fieldbus." }, user, true);
  const events = await sseEvents(s.data);
  const names = events.map((e) => e.event);
  check("runWorkflow streaming: starts with workflow_started", names[0] === "workflow_started", names);
  check("runWorkflow streaming: ends with workflow_finished", names[names.length - 1] === "workflow_finished", names);
  check("runWorkflow streaming: node events", names.filter((n) => n === "node_finished").length === 3, names);
  const fin = events[events.length - 1];
  check("runWorkflow streaming: succeeded", fin?.data?.status === "succeeded", fin);
  seen.streaming_run_id = events[0]?.workflow_run_id;

  const chat = new ChatClient(chatflowKey, base);
  const c1 = await chat.createChatMessage({}, "Hello there", user, false);
  check("chatflow blocking: HTTP 200", c1.status === 200, c1.status);
  check("chatflow blocking: mode", c1.data?.mode === "advanced-chat", c1.data);
  check("chatflow blocking: answer", typeof c1.data?.answer === "string" && c1.data.answer.length > 0, c1.data);
  const conv = c1.data?.conversation_id;
  check("chatflow blocking: conversation", isUuid(conv), c1.data);
  const c2 = await chat.createChatMessage({}, "And again", user, true, conv);
  const ev2 = await sseEvents(c2.data);
  const n2 = ev2.map((e) => e.event);
  check("chatflow streaming: message_end last", n2[n2.length - 1] === "message_end", n2);
  check("chatflow streaming: workflow_finished before it", n2[n2.length - 2] === "workflow_finished", n2);
  check("chatflow streaming: same conversation", ev2.every((e) => e.conversation_id === conv), ev2[0]);
  const msgs = await chat.getConversationMessages(user, conv);
  check("chatflow: two messages stored", msgs.data?.data?.length === 2, msgs.data);
  seen.conversation_id = conv;
}

main()
  .then(() => console.log(JSON.stringify({ checks: results, seen })))
  .catch((err) => {
    console.error(err?.response?.data ?? err);
    process.exit(1);
  });
