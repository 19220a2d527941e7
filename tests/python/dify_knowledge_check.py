"""Dify's Python SDK against edgeaid's Knowledge (datasets) API, with a
`dataset-…` key.

dify-client 0.1.10, the newest release on PyPI and the one scripts/setup.sh
pins, has no `KnowledgeBaseClient`: that class exists only in Dify's
repository (sdks/python-client/dify_client/client.py), unreleased. So the
`Knowledge` class below sends, through 0.1.10's own `_send_request` and
`_send_request_with_files` (the transport every SDK method uses), the
requests that upstream's `KnowledgeBaseClient` methods of the same names
send: the same method, path, query and body, with the same defaults
(`create_by_text`/`create_by_file` underscore paths, `data` as a JSON form
field, `{"segment": {...}}` for a segment update, `hit-testing`). Each
answer is checked for Dify's shape and for the values that must follow.

Run by tests/tests/knowledge_sdk.rs:

    python tests/python/dify_knowledge_check.py BASE_URL DATASET_KEY FILE_DIR

Prints one JSON line: {"checks": [{"name", "ok", "detail"}], "seen": {...}}.
"""

import json
import os
import re
import sys
import time

from dify_client import DifyClient

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
results = []
seen = {}

PLC = "To clear a PLC alarm, first remove the cause, then press ACK on the HMI alarm page, then press RESET on the operator panel."
BELT = "Check the conveyor belt tension every week: it should deflect 15 to 20 mm under a 5 kg load."
FILTER = "空气滤芯每运行2000小时更换一次。当控制面板显示滤芯压差高时，要提前更换。"
PUMP = "The coolant pump seal is replaced every 4000 operating hours; drain the sump before opening the housing."
ADDED = "Torque the motor mounting bolts to 45 Nm after any belt replacement."
EDITED = "Torque the motor mounting bolts to 50 Nm after any belt or pulley replacement."


def check(name, ok, detail=""):
    results.append({"name": name, "ok": bool(ok), "detail": "" if ok else str(detail)[:2000]})


def body(r):
    try:
        return r.json()
    except ValueError:
        return {"_status": r.status_code, "_text": r.text[:500]}


class Knowledge(DifyClient):
    """The requests of upstream `KnowledgeBaseClient`, method by method."""

    def __init__(self, api_key, base_url, dataset_id=None):
        super().__init__(api_key)
        self.base_url = base_url
        self.dataset_id = dataset_id

    def _ds(self):
        if self.dataset_id is None:
            raise ValueError("dataset_id is not set")
        return self.dataset_id

    def create_dataset(self, name):
        return self._send_request("POST", "/datasets", {"name": name})

    def list_datasets(self, page=1, page_size=20):
        return self._send_request("GET", "/datasets", params={"page": page, "limit": page_size})

    def get_dataset(self):
        return self._send_request("GET", f"/datasets/{self._ds()}")

    def update_dataset(self, **fields):
        return self._send_request("PATCH", f"/datasets/{self._ds()}", json=fields)

    def create_document_by_text(self, name, text, extra_params=None):
        data = {"indexing_technique": "high_quality", "process_rule": {"mode": "automatic"}, "name": name, "text": text}
        data.update(extra_params or {})
        return self._send_request("POST", f"/datasets/{self._ds()}/document/create_by_text", json=data)

    def update_document_by_text(self, document_id, name, text, extra_params=None):
        data = {"name": name, "text": text}
        data.update(extra_params or {})
        return self._send_request("POST", f"/datasets/{self._ds()}/documents/{document_id}/update_by_text", json=data)

    def create_document_by_file(self, file_path, original_document_id=None, extra_params=None):
        data = {"process_rule": {"mode": "automatic"}, "indexing_technique": "high_quality"}
        data.update(extra_params or {})
        if original_document_id is not None:
            data["original_document_id"] = original_document_id
        with open(file_path, "rb") as f:
            return self._send_request_with_files("POST", f"/datasets/{self._ds()}/document/create_by_file", {"data": json.dumps(data)}, {"file": f})

    def update_document_by_file(self, document_id, file_path, extra_params=None):
        with open(file_path, "rb") as f:
            url = f"/datasets/{self._ds()}/documents/{document_id}/update_by_file"
            return self._send_request_with_files("POST", url, {"data": json.dumps(extra_params or {})}, {"file": f})

    def batch_indexing_status(self, batch_id):
        return self._send_request("GET", f"/datasets/{self._ds()}/documents/{batch_id}/indexing-status")

    def batch_update_document_status(self, action, document_ids):
        return self._send_request("PATCH", f"/datasets/{self._ds()}/documents/status/{action}", json={"document_ids": document_ids})

    def delete_dataset(self):
        return self._send_request("DELETE", f"/datasets/{self._ds()}")

    def delete_document(self, document_id):
        return self._send_request("DELETE", f"/datasets/{self._ds()}/documents/{document_id}")

    def list_documents(self, page=None, page_size=None, keyword=None):
        params = {}
        if page is not None:
            params["page"] = page
        if page_size is not None:
            params["limit"] = page_size
        if keyword is not None:
            params["keyword"] = keyword
        return self._send_request("GET", f"/datasets/{self._ds()}/documents", params=params)

    def add_segments(self, document_id, segments):
        return self._send_request("POST", f"/datasets/{self._ds()}/documents/{document_id}/segments", json={"segments": segments})

    def query_segments(self, document_id, keyword=None, status=None):
        params = {}
        if keyword is not None:
            params["keyword"] = keyword
        if status is not None:
            params["status"] = status
        return self._send_request("GET", f"/datasets/{self._ds()}/documents/{document_id}/segments", params=params)

    def update_document_segment(self, document_id, segment_id, segment_data):
        url = f"/datasets/{self._ds()}/documents/{document_id}/segments/{segment_id}"
        return self._send_request("POST", url, json={"segment": segment_data})

    def delete_document_segment(self, document_id, segment_id):
        return self._send_request("DELETE", f"/datasets/{self._ds()}/documents/{document_id}/segments/{segment_id}")

    def hit_testing(self, query, retrieval_model=None):
        data = {"query": query}
        if retrieval_model:
            data["retrieval_model"] = retrieval_model
        return self._send_request("POST", f"/datasets/{self._ds()}/hit-testing", json=data)


def wait_indexed(kb, name, batch):
    """Polls `batch_indexing_status` until no document of the batch is
    still on its way (bounded: 120 s); checks the final answer."""
    deadline = time.monotonic() + 120
    while True:
        r = kb.batch_indexing_status(batch)
        b = body(r)
        docs = b.get("data") if isinstance(b, dict) else None
        if r.status_code != 200 or not isinstance(docs, list) or not docs:
            check(f"{name}: batch_indexing_status answers", False, b)
            return []
        if all(d.get("indexing_status") in ("completed", "error") for d in docs) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    ok = all(
        d.get("indexing_status") == "completed"
        and isinstance(d.get("completed_segments"), int)
        and d.get("completed_segments") == d.get("total_segments")
        and d["total_segments"] > 0
        and isinstance(d.get("completed_at"), int)
        for d in docs
    )
    check(f"{name}: batch_indexing_status completed, every segment", ok, docs)
    return docs


def hit_contents(r):
    b = body(r)
    return [rec.get("segment", {}).get("content", "") for rec in b.get("records", [])] if isinstance(b, dict) else []


def main():
    base, key, file_dir = sys.argv[1:4]
    kb = Knowledge(key, base)

    # Datasets.
    r = kb.create_dataset("sdk manuals")
    ds = body(r)
    check("create_dataset: 200 and a dataset", r.status_code == 200 and UUID.match(ds.get("id", "")) and ds.get("name") == "sdk manuals", ds)
    kb.dataset_id = ds.get("id")
    kept = Knowledge(key, base, body(kb.create_dataset("sdk kept")).get("id"))
    r = kb.list_datasets(page=1, page_size=20)
    listed = body(r)
    ids = [d.get("id") for d in listed.get("data", [])]
    check(
        "list_datasets: both, Dify's page",
        r.status_code == 200 and set(ids) == {kb.dataset_id, kept.dataset_id} and listed.get("total") == 2
        and listed.get("page") == 1 and listed.get("limit") == 20 and listed.get("has_more") is False,
        listed,
    )
    r = kb.list_datasets(page=1, page_size=1)
    check("list_datasets: page_size 1 has more", len(body(r).get("data", [])) == 1 and body(r).get("has_more") is True, body(r))
    r = kb.update_dataset(description="Line 2 maintenance")
    check("update_dataset (PATCH)", r.status_code == 200 and body(r).get("description") == "Line 2 maintenance", body(r))
    got = body(kb.get_dataset())
    check("get_dataset: the update", got.get("description") == "Line 2 maintenance" and got.get("indexing_technique") == "high_quality", got)

    # Documents by text (upstream's defaults: high_quality, automatic rules).
    r = kb.create_document_by_text("plc.txt", PLC)
    created = body(r)
    doc = created.get("document", {})
    check(
        "create_document_by_text: document and batch",
        r.status_code == 200 and UUID.match(doc.get("id", "")) and doc.get("name") == "plc.txt" and bool(created.get("batch"))
        and doc.get("indexing_status") in ("waiting", "parsing", "splitting", "indexing", "completed"),
        created,
    )
    plc_id = doc.get("id")
    wait_indexed(kb, "create_document_by_text", created.get("batch", "-"))

    # Documents by file, with the custom rules of upstream's docstring.
    custom = {
        "indexing_technique": "high_quality",
        "process_rule": {
            "mode": "custom",
            "rules": {
                "pre_processing_rules": [{"id": "remove_extra_spaces", "enabled": True}, {"id": "remove_urls_emails", "enabled": True}],
                "segmentation": {"separator": "\n", "max_tokens": 500},
            },
        },
    }
    path = os.path.join(file_dir, "maintenance.txt")
    with open(path, "w", encoding="utf-8") as f:
        f.write(BELT + "\n" + FILTER + "\n")
    r = kb.create_document_by_file(path, extra_params=custom)
    created = body(r)
    doc = created.get("document", {})
    check("create_document_by_file: document and batch", r.status_code == 200 and UUID.match(doc.get("id", "")) and doc.get("name") == "maintenance.txt", created)
    file_id = doc.get("id")
    wait_indexed(kb, "create_document_by_file", created.get("batch", "-"))
    segs = body(kb.query_segments(file_id)).get("data", [])
    check("create_document_by_file: the separator split two segments", sorted(s.get("content") for s in segs) == sorted([BELT, FILTER]), segs)

    # Listing documents.
    r = kb.list_documents(page=1, page_size=20)
    docs = body(r)
    check(
        "list_documents: both",
        r.status_code == 200 and {d.get("id") for d in docs.get("data", [])} == {plc_id, file_id} and docs.get("total") == 2,
        docs,
    )
    check("list_documents: completed", all(d.get("indexing_status") == "completed" and d.get("enabled") is True for d in docs.get("data", [])), docs)
    got = body(kb.get_dataset())
    check("get_dataset: counts the documents and words", got.get("document_count") == 2 and (got.get("word_count") or 0) >= len(PLC), got)
    r = kb.list_documents(keyword="plc")
    check("list_documents: keyword", [d.get("id") for d in body(r).get("data", [])] == [plc_id], body(r))

    # Segments.
    r = kb.query_segments(plc_id)
    q = body(r)
    check(
        "query_segments: the text's segment",
        r.status_code == 200 and [s.get("content") for s in q.get("data", [])] == [PLC] and q.get("doc_form") == "text_model",
        q,
    )
    check("query_segments: Dify's page fields", {"total", "has_more", "limit", "page"} <= set(q) and q.get("total") == 1, q)
    r = kb.query_segments(plc_id, status="completed")
    check("query_segments: status=completed", r.status_code == 200 and len(body(r).get("data", [])) == 1, body(r))
    # Dify's field is `keywords` (upstream's docstring example says `keyword`,
    # which Dify's server ignores, as edgeaid does).
    r = kb.add_segments(plc_id, [{"content": ADDED, "answer": "", "keywords": ["torque", "bolts"]}])
    added = body(r).get("data", [])
    seg = added[0] if len(added) == 1 and isinstance(added[0], dict) else {}
    check(
        "add_segments: the segment",
        r.status_code == 200 and UUID.match(seg.get("id", "")) and seg.get("content") == ADDED and seg.get("document_id") == plc_id
        and sorted(seg.get("keywords") or []) == ["bolts", "torque"],
        body(r),
    )
    seg_id = seg.get("id", "-")
    listed = body(kb.query_segments(plc_id)).get("data", [])
    check("query_segments: the added segment is listed", seg_id in [s.get("id") for s in listed] and len(listed) == 2, listed)
    r = kb.query_segments(plc_id, keyword="torque")
    check("query_segments: keyword", [s.get("id") for s in body(r).get("data", [])] == [seg_id], body(r))
    r = kb.update_document_segment(plc_id, seg_id, {"content": EDITED, "answer": "", "keywords": ["torque"], "enabled": True})
    upd = body(r).get("data", {})
    check("update_document_segment: the new content", r.status_code == 200 and upd.get("id") == seg_id and upd.get("content") == EDITED and upd.get("keywords") == ["torque"], body(r))
    listed = body(kb.query_segments(plc_id)).get("data", [])
    check("query_segments: the updated content", EDITED in [s.get("content") for s in listed] and ADDED not in [s.get("content") for s in listed], listed)

    # Search (upstream's hit_testing; Dify's documented `retrieve` is the same handler).
    semantic = {"search_method": "semantic_search", "reranking_enable": False, "top_k": 2, "score_threshold_enabled": False}
    r = kb.hit_testing("How do I reset the alarm on the PLC?", semantic)
    hits = body(r)
    recs = hits.get("records", []) if isinstance(hits, dict) else []
    check(
        "hit_testing: semantic, the PLC segment first",
        r.status_code == 200 and hits.get("query", {}).get("content") == "How do I reset the alarm on the PLC?" and recs
        and recs[0].get("segment", {}).get("content") == PLC and isinstance(recs[0].get("score"), float)
        and recs[0].get("segment", {}).get("document", {}).get("id") == plc_id,
        hits,
    )
    r = kb.hit_testing("滤芯", {"search_method": "full_text_search", "reranking_enable": False, "top_k": 3, "score_threshold_enabled": False})
    check("hit_testing: full text finds a Chinese substring", FILTER in hit_contents(r), body(r))
    hybrid = {
        "search_method": "hybrid_search", "reranking_enable": False, "top_k": 3, "score_threshold_enabled": False,
        "weights": {"vector_setting": {"vector_weight": 0.7}, "keyword_setting": {"keyword_weight": 0.3}},
    }
    r = kb.hit_testing("motor bolts torque", hybrid)
    check("hit_testing: hybrid finds the updated segment", EDITED in hit_contents(r), body(r))
    r = kb.hit_testing("belt tension")
    check("hit_testing without retrieval_model: the dataset's default", r.status_code == 200 and BELT in hit_contents(r), body(r))
    one = dict(semantic, top_k=1)
    r = kb.update_dataset(retrieval_model=one)
    check("update_dataset: a retrieval_model", r.status_code == 200 and (body(r).get("retrieval_model_dict") or {}).get("top_k") == 1, body(r))
    r = kb.hit_testing("belt tension")
    check("hit_testing without retrieval_model: the dataset's top_k 1", hit_contents(r) == [BELT], body(r))
    r = kb._send_request("POST", f"/datasets/{kb.dataset_id}/retrieve", json={"query": "belt tension", "retrieval_model": hybrid})
    check("retrieve (Dify's documented path)", BELT in hit_contents(r), body(r))

    # Disable and enable documents.
    r = kb.batch_update_document_status("disable", [file_id])
    check("batch_update_document_status: disable", r.status_code == 200 and body(r).get("result") == "success", body(r))
    r = kb.hit_testing("滤芯", {"search_method": "full_text_search", "reranking_enable": False, "top_k": 3, "score_threshold_enabled": False})
    check("hit_testing: a disabled document is not found", r.status_code == 200 and FILTER not in hit_contents(r), body(r))
    r = kb.batch_update_document_status("enable", [file_id])
    check("batch_update_document_status: enable", r.status_code == 200 and body(r).get("result") == "success", body(r))

    # Replacing a document's text keeps its id and re-indexes it.
    r = kb.update_document_by_text(plc_id, "pump.txt", PUMP)
    upd = body(r)
    check("update_document_by_text: same document, new batch", r.status_code == 200 and upd.get("document", {}).get("id") == plc_id and bool(upd.get("batch")), upd)
    wait_indexed(kb, "update_document_by_text", upd.get("batch", "-"))
    segs = [s.get("content") for s in body(kb.query_segments(plc_id)).get("data", [])]
    check("update_document_by_text: the new text replaced the old", segs == [PUMP], segs)
    names = {d.get("id"): d.get("name") for d in body(kb.list_documents()).get("data", [])}
    check("update_document_by_text: renamed", names.get(plc_id) == "pump.txt", names)

    # Replacing a document's file.
    path2 = os.path.join(file_dir, "belt.md")
    with open(path2, "w", encoding="utf-8") as f:
        f.write("# Belt\n\n" + BELT + "\n")
    r = kb.update_document_by_file(file_id, path2)
    upd = body(r)
    check("update_document_by_file: same document, new batch", r.status_code == 200 and upd.get("document", {}).get("id") == file_id and bool(upd.get("batch")), upd)
    wait_indexed(kb, "update_document_by_file", upd.get("batch", "-"))
    segs = " ".join(s.get("content", "") for s in body(kb.query_segments(file_id)).get("data", []))
    check("update_document_by_file: the new file's text", BELT in segs and "滤芯" not in segs, segs)

    # In the kept dataset: a file document, then replaced through
    # create_document_by_file's original_document_id.
    r = kept.create_document_by_file(path)
    first = body(r).get("document", {}).get("id")
    wait_indexed(kept, "create_document_by_file (kept dataset)", body(r).get("batch", "-"))
    r = kept.create_document_by_file(path2, original_document_id=first)
    kept_doc = body(r).get("document", {}).get("id")
    check("create_document_by_file: original_document_id replaces that document", r.status_code == 200 and kept_doc == first, body(r))
    wait_indexed(kept, "create_document_by_file (replacing)", body(r).get("batch", "-"))
    kept_segs = body(kept.query_segments(kept_doc)).get("data", [])
    seen["kept_dataset_id"] = kept.dataset_id
    seen["kept_document_id"] = kept_doc
    seen["kept_segment_ids"] = sorted(s.get("id") for s in kept_segs)

    # Deletions.
    pump_segs = body(kb.query_segments(plc_id)).get("data", [])
    victim = pump_segs[0].get("id") if pump_segs else "-"
    r = kb.delete_document_segment(plc_id, victim)
    check("delete_document_segment: 204", r.status_code == 204, (r.status_code, r.text[:300]))
    left = body(kb.query_segments(plc_id)).get("data", [])
    check("delete_document_segment: gone from query_segments", victim not in [s.get("id") for s in left], left)
    r = kb.delete_document(plc_id)
    check("delete_document: 204", r.status_code == 204, (r.status_code, r.text[:300]))
    docs = body(kb.list_documents())
    check("delete_document: gone from list_documents", [d.get("id") for d in docs.get("data", [])] == [file_id] and docs.get("total") == 1, docs)
    r = kb.delete_dataset()
    check("delete_dataset: 204", r.status_code == 204, (r.status_code, r.text[:300]))
    r = kb.get_dataset()
    check("delete_dataset: get_dataset is 404 not_found", r.status_code == 404 and body(r).get("code") == "not_found", body(r))
    ids = [d.get("id") for d in body(kb.list_datasets()).get("data", [])]
    check("delete_dataset: gone from list_datasets", ids == [kept.dataset_id], ids)
    seen["deleted_dataset_id"] = kb.dataset_id
    seen["deleted_document_id"] = plc_id

    # Errors in Dify's shape.
    r = kept._send_request("GET", "/datasets/3f0e8a52-9a5c-4c1e-8f43-2f3b8d3c9e11/documents")
    check("an unknown dataset: 404 with Dify's error body", r.status_code == 404 and set(body(r)) >= {"code", "message", "status"}, body(r))


if __name__ == "__main__":
    main()
    print(json.dumps({"checks": results, "seen": seen}, ensure_ascii=False))
