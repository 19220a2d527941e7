"""Dify's Python SDK (`dify-client`, pinned in scripts/setup.sh) against
edgeaid's DSL apps. dify-client 0.1.10, the newest on PyPI, has no workflow
class: a workflow run goes through its own `DifyClient._send_request`, as
its methods do; the chatflow (advanced-chat) app is driven with
`ChatClient.create_chat_message` and `get_conversation_messages`.

Run by tests/tests/workflow_sdk.rs:

    python tests/python/dify_workflow_check.py BASE_URL WORKFLOW_KEY CHATFLOW_KEY USER

Prints one JSON line: {"checks": [{"name", "ok", "detail"}], "seen": {...}}.
"""

import json
import re
import sys

from dify_client import ChatClient, DifyClient

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
results = []
seen = {}


def check(name, ok, detail=""):
    results.append({"name": name, "ok": bool(ok), "detail": "" if ok else str(detail)[:2000]})


def events(response):
    out = []
    for line in response.iter_lines(decode_unicode=True):
        if line and line.startswith("data: "):
            out.append(json.loads(line[6:]))
    return out


def main():
    base, workflow_key, chatflow_key, user = sys.argv[1:5]
    wf = DifyClient(workflow_key)
    wf.base_url = base
    r = wf._send_request("POST", "/workflows/run", json={"inputs": {"question": "What is a PLC?"}, "response_mode": "blocking", "user": user})
    body = r.json()
    check("workflow blocking: HTTP 200", r.status_code == 200, r.status_code)
    check("workflow blocking: succeeded", body.get("data", {}).get("status") == "succeeded", body)
    check("workflow blocking: answer", bool(body.get("data", {}).get("outputs", {}).get("answer")), body)
    run_id = body.get("workflow_run_id")
    check("workflow blocking: run id", bool(run_id and UUID.match(run_id)), body)
    detail = wf._send_request("GET", f"/workflows/run/{run_id}").json()
    check("workflow run detail", detail.get("status") == "succeeded" and detail.get("id") == run_id, detail)
    s = wf._send_request("POST", "/workflows/run", json={"inputs": {"question": "Name a fieldbus."}, "response_mode": "streaming", "user": user}, stream=True)
    ev = events(s)
    names = [e.get("event") for e in ev]
    check("workflow streaming order", names[:1] == ["workflow_started"] and names[-1:] == ["workflow_finished"], names)
    logs = wf._send_request("GET", "/workflows/logs", params={"limit": 10}).json()
    check("workflow logs", logs.get("total") == 2, logs)
    seen["run_id"] = run_id

    chat = ChatClient(chatflow_key)
    chat.base_url = base
    c1 = chat.create_chat_message({}, "Hello there", user, response_mode="blocking").json()
    check("chatflow blocking answer", c1.get("mode") == "advanced-chat" and bool(c1.get("answer")), c1)
    conv = c1.get("conversation_id")
    c2 = events(chat.create_chat_message({}, "And again", user, response_mode="streaming", conversation_id=conv))
    n2 = [e.get("event") for e in c2]
    check("chatflow streaming ends workflow_finished, message_end", n2[-2:] == ["workflow_finished", "message_end"], n2)
    msgs = chat.get_conversation_messages(user, conv).json()
    check("chatflow messages", len(msgs.get("data", [])) == 2, msgs)
    seen["conversation_id"] = conv


if __name__ == "__main__":
    main()
    print(json.dumps({"checks": results, "seen": seen}))
