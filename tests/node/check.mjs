// Calls every method of Dify's Node SDK (npm `dify-client`, pinned in
// tests/node/package.json) that applies to chat and completion apps against
// a running edgeaid, and checks the answers.
//
// Run by tests/tests/dify_node.rs after scripts/setup.sh ran `npm ci` here:
//
//   node tests/node/check.mjs GROUP BASE_URL CHAT_KEY COMPLETION_KEY LONG_KEY SUGGEST_KEY USER
//
// GROUP is `core` (chat, completion, stop, conversations, messages, feedback,
// parameters, info, meta, updateApiKey) or `newer` (the routes and
// behaviours issue 11 adds: files, audio, site, suggested questions, app
// feedbacks, `user` as any JSON scalar, `files` ignored, app_unavailable).
// LONG_KEY is a key of the harness's long app (for stop), SUGGEST_KEY of an
// app with suggested questions after answer on (`-` when the daemon could not
// import one).
//
// dify-client 2.3.2 (the newest on npm) has messageFeedback,
// getApplicationParameters, fileUpload, createCompletionMessage,
// createChatMessage, getConversationMessages, getConversations,
// renameConversation, deleteConversation, updateApiKey and runWorkflow (for
// workflow apps only: not called). The routes Dify's newer SDKs call besides
// (stop, suggested, audio, site, info, meta, file preview, app feedbacks) go
// through the release's own `sendRequest`, as its methods do.
//
// Prints one JSON line: {"checks": [{"name", "ok", "detail"}], "seen": {...}}.
// Exits 0 when the checks could run (the Rust test judges them), 1 when the
// script itself cannot go on.

import { randomUUID } from "node:crypto";

import { ChatClient, CompletionClient } from "dify-client";

const STT_DISABLED = "Speech to text is not enabled";
const TTS_DISABLED = "TTS is not enabled";
const SITE_FIELDS = [
  "title", "chat_color_theme", "chat_color_theme_inverted", "icon_type", "icon", "icon_background",
  "icon_url", "description", "copyright", "privacy_policy", "custom_disclaimer", "default_language",
  "show_workflow_steps", "use_icon_as_answer_icon",
];
const FEEDBACK_FIELDS = [
  "id", "app_id", "conversation_id", "message_id", "rating", "content", "from_source",
  "from_end_user_id", "from_account_id", "created_at", "updated_at",
];
const DOCUMENT = "Line 2 valve V-17 replaced on 2026-11-02.\nPressure test passed at 6 bar.\n";
const PNG = Buffer.from(
  "89504e470d0a1a0a0000000d4948445200000001000000010806000000" +
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082",
  "hex",
);
const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

class Abort extends Error {}

const results = [];
const seen = {};

function check(name, ok, detail = "") {
  const text = typeof detail === "string" ? detail : JSON.stringify(detail);
  results.push({ name, ok: Boolean(ok), detail: ok ? "" : String(text).slice(0, 2000) });
  return Boolean(ok);
}

const isUuid = (s) => typeof s === "string" && UUID_RE.test(s);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function readAll(stream) {
  let s = "";
  for await (const chunk of stream) s += chunk.toString("utf8");
  return s;
}

// Any SDK call as { status, data, headers }: axios throws on a non-2xx
// answer, a Dify client reads the error from err.response.
async function call(promise) {
  try {
    const r = await promise;
    return { status: r.status, data: r.data, headers: r.headers };
  } catch (err) {
    if (!err.response) throw err;
    let data = err.response.data;
    if (data && typeof data.pipe === "function") {
      const text = await readAll(data);
      try { data = JSON.parse(text); } catch { data = text; }
    }
    return { status: err.response.status, data, headers: err.response.headers };
  }
}

function status(name, r, want) {
  check(`${name}: HTTP ${want}`, r.status === want, `HTTP ${r.status}: ${JSON.stringify(r.data)?.slice(0, 500)}`);
  return r.data && typeof r.data === "object" ? r.data : {};
}

function difyError(name, r, code, errCode, message) {
  const b = r.data && typeof r.data === "object" ? r.data : {};
  const ok = r.status === code && b.code === errCode && b.status === code && (message === undefined || b.message === message);
  const want = `${code} ${errCode}${message === undefined ? "" : ` ${JSON.stringify(message)}`}`;
  check(`${name}: Dify error ${want}`, ok, `HTTP ${r.status}: ${JSON.stringify(r.data)?.slice(0, 500)}`);
}

// The JSON of every `data:` line of a streamed answer, as they arrive.
async function* sseEvents(stream) {
  let buf = "";
  for await (const chunk of stream) {
    buf += chunk.toString("utf8");
    let i;
    while ((i = buf.indexOf("\n")) >= 0) {
      const line = buf.slice(0, i).replace(/\r$/, "");
      buf = buf.slice(i + 1);
      if (line.startsWith("data:")) yield JSON.parse(line.slice(5).trim());
    }
  }
}

async function readStream(name, r, conversationId) {
  check(`${name}: HTTP 200`, r.status === 200, `HTTP ${r.status}`);
  const ctype = String(r.headers["content-type"] ?? "");
  check(`${name}: Content-Type text/event-stream`, ctype.startsWith("text/event-stream"), ctype);
  let answer = "";
  let end = null;
  const events = [];
  const ids = new Set();
  for await (const ev of sseEvents(r.data)) {
    events.push(ev.event);
    ids.add(JSON.stringify([ev.task_id, ev.message_id, ev.conversation_id]));
    if (ev.event === "message") answer += ev.answer;
    else if (ev.event === "message_end") end = ev;
  }
  check(`${name}: ends with message_end`, events.at(-1) === "message_end", events);
  check(`${name}: message events carry the answer`, events.includes("message") && answer.trim(), events);
  check(`${name}: one task and message id in every event`, ids.size === 1, [...ids]);
  if (conversationId !== undefined) {
    check(`${name}: every event in the conversation`, [...ids].every((i) => JSON.parse(i)[2] === conversationId), [...ids]);
  }
  if (end) {
    const u = end.metadata?.usage ?? {};
    check(`${name}: message_end usage`, u.completion_tokens > 0 && u.prompt_tokens > 0, u);
  }
  return { answer, events, end };
}

async function core(baseUrl, chatKey, completionKey, longKey, _suggestKey, user) {
  const chat = new ChatClient(chatKey, baseUrl);

  // createChatMessage, blocking.
  let r = await call(chat.createChatMessage({}, "Hello, who are you?", user));
  const blocking = status("createChatMessage blocking", r, 200);
  if (!String(blocking.answer ?? "").trim()) throw new Abort(`the blocking chat gave no answer: HTTP ${r.status} ${JSON.stringify(r.data)}`);
  const conv = blocking.conversation_id;
  check("createChatMessage blocking: ids are UUIDs", ["conversation_id", "message_id", "task_id"].every((k) => isUuid(blocking[k])), blocking);
  check("createChatMessage blocking: event message, mode chat",
    blocking.event === "message" && blocking.mode === "chat" && blocking.id === blocking.message_id, blocking);
  const usage = blocking.metadata?.usage ?? {};
  check("createChatMessage blocking: usage counts tokens",
    usage.completion_tokens > 0 && usage.total_tokens === usage.prompt_tokens + usage.completion_tokens, usage);

  // createChatMessage, streaming, continuing the conversation.
  r = await call(chat.createChatMessage({}, "Tell me more.", user, true, conv));
  const streamed = await readStream("createChatMessage streaming", r, conv);
  if (!streamed.end) throw new Abort(`the streamed chat did not end: ${streamed.events}`);

  // getConversations (2.3.2 sends first_id where Dify reads last_id: null here, so not sent).
  r = await call(chat.getConversations(user));
  const convs = status("getConversations", r, 200).data ?? [];
  check("getConversations: the one conversation", same(convs.map((x) => x.id), [conv]), convs);
  if (convs.length) {
    check("getConversations: Dify's fields",
      ["id", "name", "inputs", "status", "introduction", "created_at", "updated_at"].every((k) => k in convs[0]), convs[0]);
  }
  r = await call(chat.getConversations(user, null, 1));
  const page = status("getConversations limit=1", r, 200);
  check("getConversations limit=1: has_more false", page.limit === 1 && page.has_more === false, page);
  r = await call(chat.getConversations("someone-else"));
  check("getConversations: another user sees none", r.status === 200 && same(r.data.data, []), r.data);

  // getConversationMessages, with first_id paging.
  r = await call(chat.getConversationMessages(user, conv));
  const msgs = status("getConversationMessages", r, 200).data ?? [];
  check("getConversationMessages: answers as the SDK saw them",
    same(msgs.map((m) => m.answer), [blocking.answer, streamed.answer]), msgs.map((m) => m.answer));
  check("getConversationMessages: ids",
    msgs.length === 2 && msgs[0].id === blocking.message_id && msgs[1].id === streamed.end.message_id, msgs);
  r = await call(chat.getConversationMessages(user, conv, null, 1));
  const newest = status("getConversationMessages limit=1", r, 200);
  check("getConversationMessages limit=1: the newest, has_more",
    same((newest.data ?? []).map((m) => m.id), [streamed.end.message_id]) && newest.has_more === true, newest);
  r = await call(chat.getConversationMessages(user, conv, streamed.end.message_id, 1));
  const older = status("getConversationMessages first_id", r, 200);
  check("getConversationMessages first_id: the one before",
    same((older.data ?? []).map((m) => m.id), [blocking.message_id]) && older.has_more === false, older);

  // messageFeedback: like, dislike, revoked (null), then like again.
  const mid = blocking.message_id;
  for (const rating of ["like", "dislike", null, "like"]) {
    r = await call(chat.messageFeedback(mid, rating, user));
    check(`messageFeedback ${rating}: result success`, r.status === 200 && same(r.data, { result: "success" }), `HTTP ${r.status}: ${JSON.stringify(r.data)}`);
    const stored = (await call(chat.getConversationMessages(user, conv))).data?.data ?? [];
    const fb = stored.find((m) => m.id === mid)?.feedback;
    check(`messageFeedback ${rating}: stored`, same(fb, rating ? { rating } : null), fb);
  }
  difyError("messageFeedback of an unknown message", await call(chat.messageFeedback(randomUUID(), "like", user)), 404, "not_found");

  // renameConversation, by name and with auto_generate.
  r = await call(chat.renameConversation(conv, "Line 2 valve", user));
  const renamed = status("renameConversation", r, 200);
  check("renameConversation: answers the renamed conversation", renamed.id === conv && renamed.name === "Line 2 valve", renamed);
  r = await call(chat.getConversations(user));
  check("renameConversation: stored", same((r.data.data ?? []).map((x) => x.name), ["Line 2 valve"]), r.data);
  r = await call(chat.renameConversation(conv, "", user, true));
  const auto = status("renameConversation auto_generate", r, 200);
  check("renameConversation auto_generate: a generated name",
    auto.id === conv && String(auto.name ?? "").trim() && auto.name !== "Line 2 valve", auto);
  difyError("renameConversation of an unknown conversation", await call(chat.renameConversation(randomUUID(), "x", user)), 404, "not_found");
  await call(chat.renameConversation(conv, "Line 2 valve", user));

  // getApplicationParameters of both apps.
  r = await call(chat.getApplicationParameters(user));
  const params = status("getApplicationParameters chat", r, 200);
  check("getApplicationParameters chat: opening statement and questions",
    params.opening_statement === "Hello! I am the test assistant." && same(params.suggested_questions, ["What is a PLC?", "What is Modbus?"]), params);
  check("getApplicationParameters chat: no speech model",
    params.speech_to_text?.enabled === false && params.text_to_speech?.enabled === false, params);
  const completion = new CompletionClient(completionKey, baseUrl);
  r = await call(completion.getApplicationParameters(user));
  const form = status("getApplicationParameters completion", r, 200).user_input_form ?? [];
  check("getApplicationParameters completion: the text paragraph input",
    form.some((f) => f.paragraph?.variable === "text" && f.paragraph?.required === true), form);

  // createCompletionMessage, blocking and streaming.
  const text = "The valve on line 2 leaked and was replaced.";
  r = await call(completion.createCompletionMessage({ text }, user));
  const done = status("createCompletionMessage blocking", r, 200);
  check("createCompletionMessage blocking: an answer, mode completion",
    String(done.answer ?? "").trim() && done.mode === "completion" && isUuid(done.message_id), done);
  r = await call(completion.createCompletionMessage({ text }, user, true));
  const cs = await readStream("createCompletionMessage streaming", r);
  check("createCompletionMessage streaming: greedy answer equals the blocking one", cs.answer === done.answer, [cs.answer, done.answer]);
  difyError("createCompletionMessage without its required input", await call(completion.createCompletionMessage({}, user)), 400, "invalid_param");
  difyError("createChatMessage on a completion app",
    await call(new ChatClient(completionKey, baseUrl).createChatMessage({}, "Hi", user)), 400, "not_chat_app");

  // Stop (Dify's stop route, through sendRequest): a long streamed answer after its first piece.
  const longChat = new ChatClient(longKey, baseUrl);
  r = await call(longChat.createChatMessage({}, "Write a long story about a robot in a factory.", user, true));
  check("stop: the long stream opens", r.status === 200, `HTTP ${r.status}`);
  const events = sseEvents(r.data);
  const first = (await events.next()).value;
  if (!first || first.event !== "message") throw new Abort(`the long stream began with ${JSON.stringify(first)}`);
  const stop = await call(longChat.sendRequest("POST", `/chat-messages/${first.task_id}/stop`, { user }));
  check("stop: result success", stop.status === 200 && same(stop.data, { result: "success" }), `HTTP ${stop.status}: ${JSON.stringify(stop.data)}`);
  const rest = [];
  for await (const ev of events) rest.push(ev.event);
  check("stop: the stream ends with message_end", rest.at(-1) === "message_end", rest);
  seen.stopped_conversation_id = first.conversation_id;
  seen.stopped_message_id = first.message_id;

  // deleteConversation: a second conversation, gone afterwards.
  const doomed = (await call(chat.createChatMessage({}, "Hi", user))).data ?? {};
  r = await call(chat.deleteConversation(doomed.conversation_id, user));
  check("deleteConversation: HTTP 204", r.status === 204, `HTTP ${r.status}: ${JSON.stringify(r.data)}`);
  r = await call(chat.getConversations(user));
  check("deleteConversation: no longer listed", same((r.data.data ?? []).map((x) => x.id), [conv]), r.data);
  difyError("getConversationMessages of the deleted conversation", await call(chat.getConversationMessages(user, doomed.conversation_id)), 404, "not_found");
  difyError("deleteConversation again", await call(chat.deleteConversation(doomed.conversation_id, user)), 404, "not_found");
  seen.deleted_conversation_id = doomed.conversation_id;

  // Info and meta (Dify's /info and /meta, through sendRequest).
  r = await call(chat.sendRequest("GET", "/info"));
  const info = status("info", r, 200);
  check("info: name, description, mode", info.name === "Demo chat" && info.mode === "chat" && Array.isArray(info.tags), info);
  r = await call(chat.sendRequest("GET", "/meta", null, { user }));
  check("meta: tool_icons", r.status === 200 && typeof r.data?.tool_icons === "object", r.data);

  // updateApiKey: a wrong key gets Dify's 401, the right one works again.
  chat.updateApiKey("app-wrong");
  difyError("updateApiKey to a wrong key", await call(chat.getConversations(user)), 401, "unauthorized");
  chat.updateApiKey(chatKey);
  r = await call(chat.getConversations(user));
  check("updateApiKey back to the key", r.status === 200, `HTTP ${r.status}`);

  Object.assign(seen, {
    conversation_id: conv,
    blocking_message_id: mid,
    blocking_answer: blocking.answer,
    streamed_answer: streamed.answer,
    events: streamed.events,
    usage: streamed.end.metadata?.usage,
    completion_message_id: done.message_id,
  });
}

async function newer(baseUrl, chatKey, completionKey, _longKey, suggestKey, user) {
  const chat = new ChatClient(chatKey, baseUrl);
  const completion = new CompletionClient(completionKey, baseUrl);

  // `user` may be any JSON scalar: Dify stringifies it.
  let r = await call(chat.createChatMessage({}, "Hi", 4711));
  const numeric = status("createChatMessage with a numeric user", r, 200);
  r = await call(chat.getConversations("4711"));
  check("createChatMessage with a numeric user: stored as \"4711\"",
    numeric.conversation_id && same((r.data?.data ?? []).map((x) => x.id), [numeric.conversation_id]), r.data);

  // `files` on an app without file upload: ignored as Dify ignores it.
  const files = [{ type: "image", transfer_method: "remote_url", url: "https://example.invalid/gauge.png" }];
  r = await call(chat.createChatMessage({}, "Hi", user, false, null, files));
  check("createChatMessage with files on an app without upload: answered",
    r.status === 200 && String(r.data?.answer ?? "").trim(), `HTTP ${r.status}: ${JSON.stringify(r.data)}`);
  r = await call(completion.createCompletionMessage({ text: "The pump hums." }, user, false, files));
  check("createCompletionMessage with files on an app without upload: answered", r.status === 200, `HTTP ${r.status}: ${JSON.stringify(r.data)}`);

  difyError("createCompletionMessage on a chat app",
    await call(new CompletionClient(chatKey, baseUrl).createCompletionMessage({}, user)), 400, "app_unavailable");

  const answer = (await call(chat.createChatMessage({}, "What is a PLC?", user))).data ?? {};
  const mid = answer.message_id;
  if (!isUuid(mid)) throw new Abort(`a chat turn failed: ${JSON.stringify(answer)}`);

  // Paging ids that do not exist: Dify's messages. (getConversations of
  // 2.3.2 sends first_id where Dify reads last_id, so last_id goes through
  // sendRequest.)
  difyError("conversations with an unknown last_id",
    await call(chat.sendRequest("GET", "/conversations", null, { user, last_id: randomUUID() })), 404, "not_found", "Last Conversation Not Exists.");
  difyError("getConversationMessages with an unknown first_id",
    await call(chat.getConversationMessages(user, answer.conversation_id, randomUUID())), 404, "not_found", "First Message Not Exists.");
  // Usage timings as current Dify reports them; message events carry from_variable_selector.
  const usage = answer.metadata?.usage ?? {};
  check("createChatMessage: usage has time_to_first_token and time_to_generate",
    ["time_to_first_token", "time_to_generate"].every((k) => typeof usage[k] === "number" && usage[k] >= 0), usage);
  r = await call(chat.createChatMessage({}, "And Modbus?", user, true, answer.conversation_id));
  const pieces = [];
  for await (const ev of sseEvents(r.data)) if (ev.event === "message") pieces.push(ev);
  check("createChatMessage streaming: message events carry from_variable_selector",
    pieces.length > 0 && pieces.every((ev) => "from_variable_selector" in ev), pieces.slice(0, 2));

  // Suggested questions. Off (the demo app): Dify's released service API
  // answers 400 bad_request "Suggested Questions Is Disabled." (Dify's newest
  // main has changed it to 403 app_suggested_questions_after_answer_disabled).
  r = await call(chat.sendRequest("GET", `/messages/${mid}/suggested`, null, { user }));
  difyError("suggested with the feature off", r, 400, "bad_request", "Suggested Questions Is Disabled.");
  difyError("suggested on a completion app",
    await call(completion.sendRequest("GET", `/messages/${mid}/suggested`, null, { user })), 400, "not_chat_app");
  // On (the app the harness imported with the feature): the model's questions.
  if (suggestKey === "-") {
    check("suggested with the feature on: an app with the feature", false,
      "the daemon refused to import an app with suggested_questions_after_answer (the test's stderr says why)");
  } else {
    const sc = new ChatClient(suggestKey, baseUrl);
    const sparams = (await call(sc.getApplicationParameters(user))).data ?? {};
    check("getApplicationParameters: suggested_questions_after_answer on", sparams.suggested_questions_after_answer?.enabled === true, sparams);
    const sanswer = (await call(sc.createChatMessage({}, "What is a PLC?", user))).data ?? {};
    r = await call(sc.sendRequest("GET", `/messages/${sanswer.message_id}/suggested`, null, { user }));
    const body = status("suggested with the feature on", r, 200);
    check("suggested: a list of questions",
      body.result === "success" && Array.isArray(body.data) && body.data.every((q) => typeof q === "string" && q.trim()), body);
    seen.suggested = body.data;
    difyError("suggested of an unknown message",
      await call(sc.sendRequest("GET", `/messages/${randomUUID()}/suggested`, null, { user })), 404, "not_found", "Message Not Exists.");
    difyError("suggested of another user's message",
      await call(sc.sendRequest("GET", `/messages/${sanswer.message_id}/suggested`, null, { user: "someone-else" })),
      404, "not_found", "Message Not Exists.");
  }

  // App feedbacks list the feedback given.
  await call(chat.messageFeedback(mid, "dislike", user));
  r = await call(chat.sendRequest("GET", "/app/feedbacks", null, { page: 1, limit: 20 }));
  const fbs = status("app feedbacks", r, 200).data ?? [];
  const mine = fbs.filter((f) => f.message_id === mid);
  check("app feedbacks: the dislike, with Dify's fields",
    mine.length === 1 && mine[0].rating === "dislike" && mine[0].conversation_id === answer.conversation_id
      && FEEDBACK_FIELDS.every((k) => k in mine[0]), fbs);

  // Site.
  r = await call(chat.sendRequest("GET", "/site"));
  const site = status("site", r, 200);
  check("site: title is the app's name", site.title === "Demo chat", site);
  check("site: Dify's site fields", SITE_FIELDS.every((k) => k in site), Object.keys(site));

  // fileUpload of a document; an image is refused while no vision model is configured.
  const form = (name, bytes, type) => {
    const f = new FormData();
    f.append("file", new Blob([bytes], { type }), name);
    f.append("user", user);
    return f;
  };
  r = await call(chat.fileUpload(form("valve-report.txt", DOCUMENT, "text/plain")));
  const up = status("fileUpload of a document", r, 201);
  check("fileUpload: Dify's file fields",
    isUuid(up.id) && up.name === "valve-report.txt" && up.size === Buffer.byteLength(DOCUMENT) && up.extension === "txt"
      && up.mime_type === "text/plain" && Number.isInteger(up.created_at), up);
  difyError("fileUpload of an image without a vision model",
    await call(chat.fileUpload(form("gauge.png", PNG, "image/png"))), 415, "unsupported_file_type");
  seen.file_id = up.id;

  // File preview: edgeaid serves an app its own upload (README: Dify serves
  // only files a message used).
  if (isUuid(up.id)) {
    r = await call(chat.sendRequest("GET", `/files/${up.id}/preview`, null, { user }));
    const body = typeof r.data === "string" ? r.data : JSON.stringify(r.data);
    check("file preview: 200 with the uploaded bytes",
      r.status === 200 && body === DOCUMENT && String(r.headers["content-type"] ?? "").startsWith("text/plain"),
      [r.status, r.headers["content-type"], body]);
  } else {
    check("fileUpload gave a file id", false, up);
  }
  difyError("file preview of an unknown file",
    await call(chat.sendRequest("GET", `/files/${randomUUID()}/preview`, null, { user })), 404, "file_not_found");

  // Audio: Dify's answer for an app without a speech model.
  const audio = new FormData();
  audio.append("file", new Blob([Buffer.from("ID3\x03\x00\x00\x00\x00\x00\x00", "latin1")], { type: "audio/mp3" }), "question.mp3");
  audio.append("user", user);
  r = await call(chat.sendRequest("POST", "/audio-to-text", audio, null, false, { "Content-Type": "multipart/form-data" }));
  difyError("audio-to-text without a speech model", r, 400, "invalid_param", STT_DISABLED);
  r = await call(chat.sendRequest("POST", "/text-to-audio", { text: "Valve replaced.", user, streaming: false }));
  difyError("text-to-audio without a speech model", r, 400, "invalid_param", TTS_DISABLED);
}

const GROUPS = { core, newer };

async function main() {
  const [group, ...args] = process.argv.slice(2);
  if (args.length !== 6 || !GROUPS[group]) {
    console.error("usage: node check.mjs core|newer BASE_URL CHAT_KEY COMPLETION_KEY LONG_KEY SUGGEST_KEY USER");
    process.exit(2);
  }
  try {
    await GROUPS[group](...args);
  } catch (e) {
    if (!(e instanceof Abort)) throw e;
    check("precondition", false, e.message);
  }
  console.log(JSON.stringify({ checks: results, seen }));
}

await main();
