#!/usr/bin/env python3
"""Calls every method of Dify's Python SDK (`dify-client`) that applies to
chat and completion apps against a running edgeaid, and checks the answers.

Run by tests/tests/dify_python.rs with the venv that scripts/setup.sh creates:

    .cache/venv/bin/python tests/python/dify_client_check.py GROUP BASE_URL CHAT_KEY COMPLETION_KEY LONG_KEY SUGGEST_KEY USER

GROUP is `core` (chat, completion, stop, conversations, messages, feedback,
parameters, info, meta) or `newer` (the routes and behaviours added by issue
11: files, audio, site, suggested questions, app feedbacks, `user` as any JSON
scalar, `files` ignored, Dify's app_unavailable). LONG_KEY is a key of the
harness's long app (for stop), SUGGEST_KEY of an app with suggested questions
after answer on (`-` when the daemon could not import one).

The pinned release (0.1.10, the newest on PyPI) has message_feedback,
get_application_parameters, file_upload, create_completion_message,
create_chat_message, get_conversation_messages, get_conversations and
rename_conversation. The methods that Dify's repository SDK
(sdks/python-client/dify_client/client.py) added since -- stop_message,
delete_conversation, get_suggested, audio_to_text, text_to_audio, get_meta,
get_app_info, get_app_site_info, get_file_preview, rename with auto_generate
-- are not published; they are one `_send_request` call each there, so they
are called here as that SDK calls them, through the release's own transport.

Prints one JSON line: {"checks": [{"name", "ok", "detail"}], "seen": {...}}.
Exits 0 when the checks could run (whether they passed or not: the Rust test
judges them and lists the failures), 1 with a message when the script
itself cannot go on (a missing precondition).
"""
import json
import sys
import uuid

from dify_client import ChatClient, CompletionClient

# Dify's answers for an app without a speech model
# (api/services/audio_service.py raises ValueError, which
# api/libs/external_api.py turns into 400 invalid_param).
STT_DISABLED = "Speech to text is not enabled"
TTS_DISABLED = "TTS is not enabled"
# The fields of Dify's site model (controllers/common/fields.py build_site_model).
SITE_FIELDS = [
    "title", "chat_color_theme", "chat_color_theme_inverted", "icon_type", "icon", "icon_background",
    "icon_url", "description", "copyright", "privacy_policy", "custom_disclaimer", "default_language",
    "show_workflow_steps", "use_icon_as_answer_icon",
]
# Dify's feedback list item (controllers/service_api/app/message.py AppFeedbackResponse).
FEEDBACK_FIELDS = [
    "id", "app_id", "conversation_id", "message_id", "rating", "content", "from_source",
    "from_end_user_id", "from_account_id", "created_at", "updated_at",
]
DOCUMENT = b"Line 2 valve V-17 replaced on 2026-11-02.\nPressure test passed at 6 bar.\n"
# A 1x1 transparent PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082"
)


class Abort(Exception):
    """A precondition failed: later checks would only repeat it."""


class Checks:
    def __init__(self):
        self.results = []
        self.seen = {}

    def check(self, name, ok, detail=""):
        self.results.append({"name": name, "ok": bool(ok), "detail": "" if ok else str(detail)[:2000]})
        return bool(ok)

    def status(self, name, response, want):
        """Checks the HTTP status; returns the JSON body (or None)."""
        body = parse(response)
        self.check(f"{name}: HTTP {want}", response.status_code == want, f"HTTP {response.status_code}: {response.text[:500]}")
        return body

    def dify_error(self, name, response, status, code, message=None):
        """Checks a Dify error answer: status, `code`, `status` field and, if given, `message`."""
        body = parse(response) or {}
        got = (response.status_code, body.get("code"), body.get("status"))
        ok = got == (status, code, status) and (message is None or body.get("message") == message)
        want = f"{status} {code}" + (f" {message!r}" if message else "")
        self.check(f"{name}: Dify error {want}", ok, f"HTTP {response.status_code}: {response.text[:500]}")


def parse(response):
    try:
        return response.json()
    except ValueError:
        return None


def client(cls, key, base_url):
    # dify-client 0.1.10 has no base_url parameter, newer releases do; both
    # keep it in the base_url attribute.
    try:
        c = cls(key, base_url=base_url)
    except TypeError:
        c = cls(key)
    c.base_url = base_url
    return c


def is_uuid(s):
    try:
        return isinstance(s, str) and str(uuid.UUID(s)) == s
    except ValueError:
        return False


def sse_events(response):
    """The JSON of every `data:` line of an event stream, as a Dify client reads it."""
    for line in response.iter_lines(decode_unicode=True):
        if line and line.startswith("data:"):
            yield json.loads(line[len("data:"):].strip())


def read_stream(c, name, response, conversation_id=None):
    """Reads a whole streamed answer and checks its shape; returns (answer, events, end)."""
    # Not response.text: that would read the whole stream before the events.
    c.check(f"{name}: HTTP 200", response.status_code == 200, f"HTTP {response.status_code}")
    ctype = response.headers.get("Content-Type", "")
    c.check(f"{name}: Content-Type text/event-stream", ctype.startswith("text/event-stream"), ctype)
    answer, events, end, ids = "", [], None, set()
    for ev in sse_events(response):
        events.append(ev["event"])
        ids.add((ev.get("task_id"), ev.get("message_id"), ev.get("conversation_id")))
        if ev["event"] == "message":
            answer += ev["answer"]
        elif ev["event"] == "message_end":
            end = ev
    c.check(f"{name}: ends with message_end", events[-1:] == ["message_end"], events)
    c.check(f"{name}: message events carry the answer", events.count("message") >= 1 and answer.strip(), events)
    c.check(f"{name}: one task and message id in every event", len(ids) == 1, ids)
    if conversation_id is not None:
        c.check(f"{name}: every event in the conversation", all(i[2] == conversation_id for i in ids), ids)
    if end is not None:
        usage = end.get("metadata", {}).get("usage", {})
        c.check(f"{name}: message_end usage", usage.get("completion_tokens", 0) > 0 and usage.get("prompt_tokens", 0) > 0, usage)
    return answer, events, end


def core(c, base_url, chat_key, completion_key, long_key, _suggest_key, user):
    chat = client(ChatClient, chat_key, base_url)

    # create_chat_message, blocking.
    r = chat.create_chat_message(inputs={}, query="Hello, who are you?", user=user, response_mode="blocking")
    blocking = c.status("create_chat_message blocking", r, 200) or {}
    if not blocking.get("answer", "").strip():
        raise Abort(f"the blocking chat gave no answer: HTTP {r.status_code} {r.text[:500]}")
    conv = blocking.get("conversation_id")
    c.check("create_chat_message blocking: ids are UUIDs",
            all(is_uuid(blocking.get(k)) for k in ("conversation_id", "message_id", "task_id")), blocking)
    c.check("create_chat_message blocking: event message, mode chat",
            blocking.get("event") == "message" and blocking.get("mode") == "chat" and blocking.get("id") == blocking.get("message_id"), blocking)
    usage = blocking.get("metadata", {}).get("usage", {})
    c.check("create_chat_message blocking: usage counts tokens",
            usage.get("completion_tokens", 0) > 0 and usage.get("total_tokens") == usage.get("prompt_tokens", 0) + usage.get("completion_tokens", 0), usage)

    # create_chat_message, streaming, continuing the conversation.
    r = chat.create_chat_message(inputs={}, query="Tell me more.", user=user, response_mode="streaming", conversation_id=conv)
    streamed, chat_events, end = read_stream(c, "create_chat_message streaming", r, conversation_id=conv)
    if end is None:
        raise Abort(f"the streamed chat did not end: {chat_events}")

    # get_conversations.
    r = chat.get_conversations(user)
    convs = (c.status("get_conversations", r, 200) or {}).get("data", [])
    c.check("get_conversations: the one conversation", [x.get("id") for x in convs] == [conv], convs)
    if convs:
        x = convs[0]
        c.check("get_conversations: Dify's fields",
                all(k in x for k in ("id", "name", "inputs", "status", "introduction", "created_at", "updated_at")), x)
        c.check("get_conversations: introduction is the opening statement", x.get("introduction") == "Hello! I am the test assistant.", x)
    r = chat.get_conversations(user, limit=1)
    page = c.status("get_conversations limit=1", r, 200) or {}
    c.check("get_conversations limit=1: has_more false", page.get("limit") == 1 and page.get("has_more") is False, page)
    other = chat.get_conversations("someone-else")
    c.check("get_conversations: another user sees none", other.status_code == 200 and (parse(other) or {}).get("data") == [], other.text[:500])

    # get_conversation_messages, with first_id paging.
    r = chat.get_conversation_messages(user, conv)
    msgs = (c.status("get_conversation_messages", r, 200) or {}).get("data", [])
    c.check("get_conversation_messages: answers as the SDK saw them",
            [m.get("answer") for m in msgs] == [blocking["answer"], streamed], [m.get("answer") for m in msgs])
    c.check("get_conversation_messages: queries", [m.get("query") for m in msgs] == ["Hello, who are you?", "Tell me more."], msgs)
    c.check("get_conversation_messages: ids", len(msgs) == 2 and msgs[0].get("id") == blocking["message_id"] and msgs[1].get("id") == end["message_id"], msgs)
    r = chat.get_conversation_messages(user, conv, limit=1)
    newest = c.status("get_conversation_messages limit=1", r, 200) or {}
    c.check("get_conversation_messages limit=1: the newest, has_more",
            [m.get("id") for m in newest.get("data", [])] == [end["message_id"]] and newest.get("has_more") is True, newest)
    r = chat.get_conversation_messages(user, conv, first_id=end["message_id"], limit=1)
    older = c.status("get_conversation_messages first_id", r, 200) or {}
    c.check("get_conversation_messages first_id: the one before",
            [m.get("id") for m in older.get("data", [])] == [blocking["message_id"]] and older.get("has_more") is False, older)

    # message_feedback: like, then dislike, then revoked (rating None).
    mid = blocking["message_id"]
    for rating in ("like", "dislike", None):
        r = chat.message_feedback(mid, rating, user)
        c.check(f"message_feedback {rating}: result success", r.status_code == 200 and parse(r) == {"result": "success"}, f"HTTP {r.status_code}: {r.text[:300]}")
        stored = parse(chat.get_conversation_messages(user, conv)) or {}
        fb = next((m.get("feedback") for m in stored.get("data", []) if m.get("id") == mid), "missing")
        want = {"rating": rating} if rating else None
        c.check(f"message_feedback {rating}: stored", fb == want, fb)
    r = chat.message_feedback(mid, "like", user)
    c.check("message_feedback like (kept for the harness)", r.status_code == 200, r.text[:300])
    c.dify_error("message_feedback of an unknown message", chat.message_feedback(str(uuid.uuid4()), "like", user), 404, "not_found")
    c.dify_error("message_feedback with a bad rating", chat.message_feedback(mid, "love", user), 400, "invalid_param")

    # rename_conversation (the release: a name), and with auto_generate as the repository SDK sends it.
    r = chat.rename_conversation(conv, "Line 2 valve", user)
    renamed = c.status("rename_conversation", r, 200) or {}
    c.check("rename_conversation: answers the renamed conversation", renamed.get("id") == conv and renamed.get("name") == "Line 2 valve", renamed)
    listed = (parse(chat.get_conversations(user)) or {}).get("data", [])
    c.check("rename_conversation: stored", [x.get("name") for x in listed] == ["Line 2 valve"], listed)
    r = chat._send_request("POST", f"/conversations/{conv}/name", {"name": "", "auto_generate": True, "user": user})
    auto = c.status("rename_conversation auto_generate", r, 200) or {}
    c.check("rename_conversation auto_generate: a generated name", auto.get("id") == conv and str(auto.get("name", "")).strip() and auto.get("name") != "Line 2 valve", auto)
    c.dify_error("rename_conversation of an unknown conversation", chat.rename_conversation(str(uuid.uuid4()), "x", user), 404, "not_found")
    # Put the name back for the harness's cross-check.
    chat.rename_conversation(conv, "Line 2 valve", user)

    # get_application_parameters of both apps.
    r = chat.get_application_parameters(user)
    params = c.status("get_application_parameters chat", r, 200) or {}
    c.check("get_application_parameters chat: opening statement and questions",
            params.get("opening_statement") == "Hello! I am the test assistant." and params.get("suggested_questions") == ["What is a PLC?", "What is Modbus?"], params)
    c.check("get_application_parameters chat: Dify's feature keys",
            all(k in params for k in ("suggested_questions_after_answer", "speech_to_text", "text_to_speech", "retriever_resource",
                                      "annotation_reply", "more_like_this", "sensitive_word_avoidance", "user_input_form",
                                      "file_upload", "system_parameters")), sorted(params))
    c.check("get_application_parameters chat: no speech model", params.get("speech_to_text", {}).get("enabled") is False
            and params.get("text_to_speech", {}).get("enabled") is False, params)

    completion = client(CompletionClient, completion_key, base_url)
    r = completion.get_application_parameters(user)
    cparams = c.status("get_application_parameters completion", r, 200) or {}
    form = cparams.get("user_input_form", [])
    c.check("get_application_parameters completion: the text paragraph input",
            any(f.get("paragraph", {}).get("variable") == "text" and f["paragraph"].get("required") is True for f in form), form)

    # create_completion_message, blocking and streaming.
    text = "The valve on line 2 leaked and was replaced."
    r = completion.create_completion_message(inputs={"text": text}, response_mode="blocking", user=user)
    done = c.status("create_completion_message blocking", r, 200) or {}
    c.check("create_completion_message blocking: an answer, mode completion",
            str(done.get("answer", "")).strip() and done.get("mode") == "completion" and is_uuid(done.get("message_id")), done)
    r = completion.create_completion_message(inputs={"text": text}, response_mode="streaming", user=user)
    cstreamed, _, cend = read_stream(c, "create_completion_message streaming", r)
    c.check("create_completion_message streaming: greedy answer equals the blocking one", cstreamed == done.get("answer"), [cstreamed, done.get("answer")])
    c.dify_error("create_completion_message without its required input",
                 completion.create_completion_message(inputs={}, response_mode="blocking", user=user), 400, "invalid_param")
    c.dify_error("create_chat_message on a completion app",
                 client(ChatClient, completion_key, base_url).create_chat_message(inputs={}, query="Hi", user=user), 400, "not_chat_app")

    # stop_message (repository SDK): stop a long streamed answer after its first piece.
    long_chat = client(ChatClient, long_key, base_url)
    r = long_chat.create_chat_message(inputs={}, query="Write a long story about a robot in a factory.", user=user, response_mode="streaming")
    c.check("stop_message: the long stream opens", r.status_code == 200, f"HTTP {r.status_code}")
    events = sse_events(r)
    first = next(events, None)
    if first is None or first.get("event") != "message":
        raise Abort(f"the long stream began with {first}")
    r2 = long_chat._send_request("POST", f"/chat-messages/{first['task_id']}/stop", {"user": user})
    c.check("stop_message: result success", r2.status_code == 200 and parse(r2) == {"result": "success"}, f"HTTP {r2.status_code}: {r2.text[:300]}")
    rest = [ev["event"] for ev in events]
    c.check("stop_message: the stream ends with message_end", rest[-1:] == ["message_end"], rest)
    c.seen["stopped_conversation_id"] = first.get("conversation_id")
    c.seen["stopped_message_id"] = first.get("message_id")

    # delete_conversation (repository SDK): a second conversation, gone afterwards.
    doomed = parse(chat.create_chat_message(inputs={}, query="Hi", user=user)) or {}
    doomed_id = doomed.get("conversation_id")
    r = chat._send_request("DELETE", f"/conversations/{doomed_id}", {"user": user})
    c.check("delete_conversation: HTTP 204", r.status_code == 204, f"HTTP {r.status_code}: {r.text[:300]}")
    listed = (parse(chat.get_conversations(user)) or {}).get("data", [])
    c.check("delete_conversation: no longer listed", [x.get("id") for x in listed] == [conv], listed)
    c.dify_error("get_conversation_messages of the deleted conversation", chat.get_conversation_messages(user, doomed_id), 404, "not_found")
    c.dify_error("delete_conversation again", chat._send_request("DELETE", f"/conversations/{doomed_id}", {"user": user}), 404, "not_found")
    c.seen["deleted_conversation_id"] = doomed_id

    # get_app_info and get_meta (repository SDK).
    r = chat._send_request("GET", "/info")
    info = c.status("get_app_info", r, 200) or {}
    c.check("get_app_info: name, description, mode", info.get("name") == "Demo chat" and info.get("mode") == "chat"
            and info.get("description") == "The end-to-end tests' chat app." and isinstance(info.get("tags"), list), info)
    r = chat._send_request("GET", "/meta", params={"user": user})
    meta = c.status("get_meta", r, 200) or {}
    c.check("get_meta: tool_icons", isinstance(meta.get("tool_icons"), dict), meta)

    # A wrong key: Dify's 401.
    c.dify_error("any method with a wrong key", client(ChatClient, "app-wrong", base_url).get_conversations(user), 401, "unauthorized")

    c.seen.update({
        "conversation_id": conv,
        "blocking_message_id": mid,
        "blocking_answer": blocking["answer"],
        "streamed_answer": streamed,
        "events": chat_events,
        "usage": end.get("metadata", {}).get("usage"),
        "completion_message_id": done.get("message_id"),
        "completion_answer": done.get("answer"),
    })


def newer(c, base_url, chat_key, completion_key, _long_key, suggest_key, user):
    chat = client(ChatClient, chat_key, base_url)
    completion = client(CompletionClient, completion_key, base_url)

    # `user` may be any JSON scalar: Dify stringifies it.
    r = chat.create_chat_message(inputs={}, query="Hi", user=4711, response_mode="blocking")
    numeric = c.status("create_chat_message with a numeric user", r, 200) or {}
    listed = (parse(chat.get_conversations("4711")) or {}).get("data", [])
    c.check("create_chat_message with a numeric user: stored as \"4711\"",
            numeric.get("conversation_id") and [x.get("id") for x in listed] == [numeric.get("conversation_id")], listed)

    # `files` on an app without file upload: ignored as Dify ignores it.
    files = [{"type": "image", "transfer_method": "remote_url", "url": "https://example.invalid/gauge.png"}]
    r = chat.create_chat_message(inputs={}, query="Hi", user=user, response_mode="blocking", files=files)
    c.check("create_chat_message with files on an app without upload: answered",
            r.status_code == 200 and str((parse(r) or {}).get("answer", "")).strip(), f"HTTP {r.status_code}: {r.text[:300]}")
    r = completion.create_completion_message(inputs={"text": "The pump hums."}, response_mode="blocking", user=user, files=files)
    c.check("create_completion_message with files on an app without upload: answered", r.status_code == 200, f"HTTP {r.status_code}: {r.text[:300]}")

    # The completion route on a chat app: Dify's app_unavailable.
    c.dify_error("create_completion_message on a chat app",
                 client(CompletionClient, chat_key, base_url).create_completion_message(inputs={}, response_mode="blocking", user=user),
                 400, "app_unavailable")

    answer = parse(chat.create_chat_message(inputs={}, query="What is a PLC?", user=user)) or {}
    mid = answer.get("message_id")
    if not is_uuid(mid):
        raise Abort(f"a chat turn failed: {answer}")

    # Paging ids that do not exist: Dify's messages (conversation.py, message.py).
    c.dify_error("get_conversations with an unknown last_id",
                 chat.get_conversations(user, last_id=str(uuid.uuid4())), 404, "not_found", "Last Conversation Not Exists.")
    c.dify_error("get_conversation_messages with an unknown first_id",
                 chat.get_conversation_messages(user, answer.get("conversation_id"), first_id=str(uuid.uuid4())),
                 404, "not_found", "First Message Not Exists.")
    # Usage timings as current Dify reports them; message events carry from_variable_selector.
    usage = answer.get("metadata", {}).get("usage", {})
    c.check("create_chat_message: usage has time_to_first_token and time_to_generate",
            all(isinstance(usage.get(k), (int, float)) and usage.get(k) >= 0 for k in ("time_to_first_token", "time_to_generate")), usage)
    r = chat.create_chat_message(inputs={}, query="And Modbus?", user=user, response_mode="streaming", conversation_id=answer.get("conversation_id"))
    pieces = [ev for ev in sse_events(r) if ev.get("event") == "message"]
    c.check("create_chat_message streaming: message events carry from_variable_selector",
            pieces and all("from_variable_selector" in ev for ev in pieces), pieces[:2])

    # get_suggested (repository SDK). Off (the demo app): Dify's released
    # service API answers 400 bad_request "Suggested Questions Is Disabled."
    # (message.py MessageSuggestedApi; Dify's newest main has changed it to
    # 403 app_suggested_questions_after_answer_disabled).
    r = chat._send_request("GET", f"/messages/{mid}/suggested", params={"user": user})
    c.dify_error("get_suggested with the feature off", r, 400, "bad_request", "Suggested Questions Is Disabled.")
    c.dify_error("get_suggested on a completion app",
                 completion._send_request("GET", f"/messages/{mid}/suggested", params={"user": user}), 400, "not_chat_app")
    # On (the app the harness imported with the feature): the model's questions.
    if suggest_key == "-":
        c.check("get_suggested with the feature on: an app with the feature", False,
                "the daemon refused to import an app with suggested_questions_after_answer (the test's stderr says why)")
    else:
        sc = client(ChatClient, suggest_key, base_url)
        sparams = parse(sc.get_application_parameters(user)) or {}
        c.check("get_application_parameters: suggested_questions_after_answer on",
                sparams.get("suggested_questions_after_answer", {}).get("enabled") is True, sparams)
        sanswer = parse(sc.create_chat_message(inputs={}, query="What is a PLC?", user=user)) or {}
        r = sc._send_request("GET", f"/messages/{sanswer.get('message_id')}/suggested", params={"user": user})
        body = c.status("get_suggested with the feature on", r, 200) or {}
        questions = body.get("data")
        c.check("get_suggested: a list of questions", body.get("result") == "success" and isinstance(questions, list)
                and all(isinstance(q, str) and q.strip() for q in questions), body)
        c.seen["suggested"] = questions
        c.dify_error("get_suggested of an unknown message",
                     sc._send_request("GET", f"/messages/{uuid.uuid4()}/suggested", params={"user": user}), 404, "not_found", "Message Not Exists.")
        c.dify_error("get_suggested of another user's message",
                     sc._send_request("GET", f"/messages/{sanswer.get('message_id')}/suggested", params={"user": "someone-else"}),
                     404, "not_found", "Message Not Exists.")

    # Feedback, then GET /app/feedbacks lists it.
    chat.message_feedback(mid, "dislike", user)
    r = chat._send_request("GET", "/app/feedbacks", params={"page": 1, "limit": 20})
    fbs = (c.status("app feedbacks", r, 200) or {}).get("data", [])
    mine = [f for f in fbs if f.get("message_id") == mid]
    c.check("app feedbacks: the dislike, with Dify's fields",
            len(mine) == 1 and mine[0].get("rating") == "dislike" and mine[0].get("conversation_id") == answer.get("conversation_id")
            and all(k in mine[0] for k in FEEDBACK_FIELDS), fbs)

    # get_app_site_info (repository SDK).
    r = chat._send_request("GET", "/site")
    site = c.status("get_app_site_info", r, 200) or {}
    c.check("get_app_site_info: title is the app's name", site.get("title") == "Demo chat", site)
    c.check("get_app_site_info: Dify's site fields", all(k in site for k in SITE_FIELDS), sorted(site))

    # file_upload (the release) of a document; an image is refused while no vision model is configured.
    r = chat.file_upload(user, {"file": ("valve-report.txt", DOCUMENT, "text/plain")})
    up = c.status("file_upload of a document", r, 201) or {}
    c.check("file_upload: Dify's file fields", is_uuid(up.get("id")) and up.get("name") == "valve-report.txt"
            and up.get("size") == len(DOCUMENT) and up.get("extension") == "txt" and up.get("mime_type") == "text/plain"
            and isinstance(up.get("created_at"), int), up)
    c.dify_error("file_upload of an image without a vision model",
                 chat.file_upload(user, {"file": ("gauge.png", PNG, "image/png")}), 415, "unsupported_file_type")
    c.dify_error("file_upload without a file", chat._send_request_with_files("POST", "/files/upload", {"user": user}, {"other": ("a.txt", b"x", "text/plain")}),
                 400, "no_file_uploaded")
    c.seen["file_id"] = up.get("id")

    # get_file_preview (repository SDK): edgeaid serves an app its own upload
    # (README: Dify serves only files a message used); an unknown id is 404.
    if is_uuid(up.get("id")):
        r = chat._send_request("GET", f"/files/{up['id']}/preview", params={"user": user})
        c.check("get_file_preview: 200 with the uploaded bytes",
                r.status_code == 200 and r.content == DOCUMENT and r.headers.get("Content-Type", "").startswith("text/plain"),
                f"{r.status_code} {r.headers.get('Content-Type')} {r.content[:200]!r}")
    else:
        c.check("file_upload gave a file id", False, repr(up))
    c.dify_error("get_file_preview of an unknown file",
                 chat._send_request("GET", f"/files/{uuid.uuid4()}/preview", params={"user": user}), 404, "file_not_found")

    # audio_to_text and text_to_audio (repository SDK): Dify's answer for an
    # app without a speech model.
    r = chat._send_request_with_files("POST", "/audio-to-text", {"user": user}, {"file": ("question.mp3", b"ID3\x03\x00\x00\x00\x00\x00\x00", "audio/mp3")})
    c.dify_error("audio_to_text without a speech model", r, 400, "invalid_param", STT_DISABLED)
    r = chat._send_request("POST", "/text-to-audio", json={"text": "Valve replaced.", "user": user, "streaming": False})
    c.dify_error("text_to_audio without a speech model", r, 400, "invalid_param", TTS_DISABLED)
    r = chat._send_request("POST", "/text-to-audio", json={"message_id": mid, "user": user})
    c.dify_error("text_to_audio of a message without a speech model", r, 400, "invalid_param", TTS_DISABLED)


GROUPS = {"core": core, "newer": newer}


def main():
    if len(sys.argv) != 8 or sys.argv[1] not in GROUPS:
        print("usage: dify_client_check.py core|newer BASE_URL CHAT_KEY COMPLETION_KEY LONG_KEY SUGGEST_KEY USER", file=sys.stderr)
        sys.exit(2)
    group, args = GROUPS[sys.argv[1]], sys.argv[2:]
    c = Checks()
    try:
        group(c, *args)
    except Abort as e:
        c.check("precondition", False, e)
    print(json.dumps({"checks": c.results, "seen": c.seen}))


if __name__ == "__main__":
    main()
