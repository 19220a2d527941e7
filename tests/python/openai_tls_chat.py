"""OpenAI's Python SDK against edgeaid over HTTPS, trusting only a test CA
(an `ssl` context with only that CA, given to the SDK's own HTTP client): one chat completion. Run by tests/tests/tls.rs:

    python tests/python/openai_tls_chat.py BASE_URL APP_KEY CA_FILE QUESTION

Prints one JSON line: {"id": ..., "content": ...}; an error (such as an
untrusted certificate) is a traceback and a non-zero exit.
"""

import json
import ssl
import sys

import openai

base_url, key, ca_file, question = sys.argv[1:5]
trust = ssl.create_default_context(cafile=ca_file)  # the test CA only, not the system's
client = openai.OpenAI(base_url=base_url, api_key=key, http_client=openai.DefaultHttpxClient(verify=trust), max_retries=0)
r = client.chat.completions.create(
    model="edgeai", messages=[{"role": "user", "content": question}], temperature=0, max_tokens=16
)
print(json.dumps({"id": r.id, "content": r.choices[0].message.content}))
