#!/usr/bin/env python3
"""Talks to edgeaid with Dify's own Python SDK (the `dify-client` package).

Run by tests/tests/dify_python.rs with the venv that scripts/setup.sh creates:

    .cache/venv/bin/python tests/python/dify_client_check.py BASE_URL CHAT_KEY COMPLETION_KEY USER

It chats in blocking mode, continues the conversation in streaming mode
(iterating the SSE lines as a Dify client would), lists the conversations
and messages, runs a completion, and prints one JSON line with what it saw.
Every check failure exits 1 with a message on stderr (no `assert`, so
`python -O` cannot skip them).
"""
import json
import sys

from dify_client import ChatClient, CompletionClient


def fail(message):
    print(f"dify_client_check: {message}", file=sys.stderr)
    sys.exit(1)


def client(cls, key, base_url):
    # dify-client 0.1.10 (the newest on PyPI here) has no base_url parameter,
    # newer releases do; both keep it in the base_url attribute.
    try:
        c = cls(key, base_url=base_url)
    except TypeError:
        c = cls(key)
    c.base_url = base_url
    return c


def ok(response, what):
    if response.status_code != 200:
        fail(f"{what}: HTTP {response.status_code}: {response.text}")
    return response


def main():
    if len(sys.argv) != 5:
        fail("usage: dify_client_check.py BASE_URL CHAT_KEY COMPLETION_KEY USER")
    base_url, chat_key, completion_key, user = sys.argv[1:]
    chat = client(ChatClient, chat_key, base_url)

    blocking = ok(chat.create_chat_message(inputs={}, query="Hello, who are you?", user=user, response_mode="blocking"), "blocking chat").json()
    if not blocking.get("answer", "").strip():
        fail(f"blocking answer is empty: {blocking}")
    conversation_id = blocking["conversation_id"]

    response = ok(
        chat.create_chat_message(inputs={}, query="Tell me more.", user=user, response_mode="streaming", conversation_id=conversation_id),
        "streaming chat",
    )
    if not response.headers.get("Content-Type", "").startswith("text/event-stream"):
        fail(f"streaming answer has Content-Type {response.headers.get('Content-Type')!r}")
    streamed, events, end = "", [], None
    for line in response.iter_lines(decode_unicode=True):
        if not line or not line.startswith("data:"):
            continue
        event = json.loads(line[len("data:"):].strip())
        events.append(event["event"])
        if event["event"] == "message":
            streamed += event["answer"]
        elif event["event"] == "message_end":
            end = event
        if event.get("conversation_id") != conversation_id:
            fail(f"event outside the conversation: {event}")
    if end is None:
        fail(f"no message_end event; events: {events}")
    if not streamed.strip():
        fail("streamed answer is empty")

    conversations = ok(chat.get_conversations(user), "get_conversations").json()["data"]
    if [c["id"] for c in conversations] != [conversation_id]:
        fail(f"get_conversations: {conversations}")
    messages = ok(chat.get_conversation_messages(user, conversation_id), "get_conversation_messages").json()["data"]
    if [m["answer"] for m in messages] != [blocking["answer"], streamed]:
        fail(f"get_conversation_messages: {messages}")

    completion = client(CompletionClient, completion_key, base_url)
    done = ok(
        completion.create_completion_message(inputs={"text": "The valve on line 2 leaked and was replaced."}, response_mode="blocking", user=user),
        "completion",
    ).json()
    if not done.get("answer", "").strip():
        fail(f"completion answer is empty: {done}")

    print(json.dumps({
        "conversation_id": conversation_id,
        "blocking_answer": blocking["answer"],
        "streamed_answer": streamed,
        "events": events,
        "usage": end["metadata"]["usage"],
        "conversations": len(conversations),
        "messages": len(messages),
        "completion_answer": done["answer"],
    }))


if __name__ == "__main__":
    main()
