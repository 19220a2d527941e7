"""OpenAI's Python SDK (`openai`, pinned in scripts/setup.sh) against
edgeaid's `POST /v1/embeddings`, with an app key. `embeddings.create`
without `encoding_format` asks for base64 and decodes it itself (the SDK's
default), so both encodings are exercised: the default, explicit
`"float"`, and explicit `"base64"` (then the SDK hands back the string).

Run by tests/tests/knowledge_sdk.rs:

    python tests/python/openai_embeddings_check.py BASE_URL APP_KEY MODEL

Prints one JSON line: {"checks": [{"name", "ok", "detail"}], "seen": {...}}.
"""

import base64
import json
import math
import struct
import sys

import openai

DIMS = 384
TEXTS = ["query: how do I clear the PLC alarm", "passage: 按下复位按钮清除报警"]
results = []
seen = {}


def check(name, ok, detail=""):
    results.append({"name": name, "ok": bool(ok), "detail": "" if ok else str(detail)[:2000]})


def norm(v):
    return math.sqrt(sum(x * x for x in v))


def unit_vectors(name, resp, n):
    data = sorted(resp.data, key=lambda d: d.index)
    check(f"{name}: one embedding per input, in order", [d.index for d in data] == list(range(n)), resp)
    vecs = [d.embedding for d in data]
    check(f"{name}: {DIMS} floats each", all(isinstance(v, list) and len(v) == DIMS and all(isinstance(x, float) for x in v) for v in vecs), [len(v) for v in vecs])
    check(f"{name}: unit norm", all(abs(norm(v) - 1.0) < 1e-3 for v in vecs), [norm(v) for v in vecs])
    return vecs


def main():
    base, key, model = sys.argv[1:4]
    client = openai.OpenAI(api_key=key, base_url=base, max_retries=0, timeout=120)
    seen["sdk_version"] = openai.__version__

    # The SDK's default: it asks for base64 and decodes it.
    default = client.embeddings.create(model=model, input=TEXTS)
    check("default: object list, a model name", default.object == "list" and isinstance(default.model, str) and bool(default.model), default)
    check("default: usage", default.usage.prompt_tokens > 2 and default.usage.total_tokens == default.usage.prompt_tokens, default.usage)
    vecs = unit_vectors("default (base64 on the wire)", default, len(TEXTS))

    floats = client.embeddings.create(model=model, input=TEXTS, encoding_format="float")
    fvecs = unit_vectors("float", floats, len(TEXTS))
    same = len(vecs) == len(fvecs) and all(max(abs(a - b) for a, b in zip(u, v)) < 1e-6 for u, v in zip(vecs, fvecs))
    check("float: the same vectors as the default", same, "differ")

    raw = client.embeddings.create(model=model, input=TEXTS[0], encoding_format="base64")
    emb = raw.data[0].embedding if raw.data else None
    ok = isinstance(emb, str)
    decoded = list(struct.unpack(f"<{DIMS}f", base64.b64decode(emb))) if ok and len(base64.b64decode(emb)) == 4 * DIMS else []
    check("base64: a string of 384 little-endian f32", len(raw.data) == 1 and len(decoded) == DIMS, emb if not ok else len(emb))
    check("base64: decodes to the float vector", bool(decoded) and bool(fvecs) and max(abs(a - b) for a, b in zip(decoded, fvecs[0])) < 1e-6, decoded[:4])

    single = client.embeddings.create(model=model, input="passage: 按下复位按钮清除报警", encoding_format="float")
    check("a single string input", len(single.data) == 1 and len(single.data[0].embedding) == DIMS, single)

    try:
        client.embeddings.create(model=model, input=TEXTS, dimensions=512)
        check("dimensions 512: refused", False, "accepted")
    except openai.BadRequestError as e:
        check("dimensions 512: BadRequestError", e.status_code == 400, e)
    try:
        openai.OpenAI(api_key="app-wrong", base_url=base, max_retries=0).embeddings.create(model=model, input="x")
        check("a wrong key: refused", False, "accepted")
    except openai.AuthenticationError as e:
        check("a wrong key: AuthenticationError", e.status_code == 401, e)


if __name__ == "__main__":
    main()
    print(json.dumps({"checks": results, "seen": seen}, ensure_ascii=False))
