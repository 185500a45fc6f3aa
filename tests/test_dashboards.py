"""The shipped dashboards query only what is delivered.

Kibana saved objects: records go through the `_bulk` destination into a real OpenSearch-API
server (osmem-server); every field a panel or saved search uses must exist in that index, and
each panel's own query and aggregations run there and find the records meant for it.
Grafana (Loki): no Loki server can be installed here, so every label and structured-metadata
name a LogQL query uses is checked against the push body the Loki destination builds, and each
panel's filters are evaluated over those entries.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import requests

from kubectl_record.collector.central import unmatched_document
from kubectl_record.destinations import loki, open_destination

from .test_destinations_kit import opensearch, records, rich_record  # noqa: F401  (fixture)

DASH = Path(__file__).resolve().parents[1] / "dashboards"
KIBANA = DASH / "kibana" / "kubectl-record.ndjson"
GRAFANA = DASH / "grafana" / "kubectl-record-loki.json"


def _generator():
    spec = importlib.util.spec_from_file_location("kr_dash_generate", DASH / "generate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def corpus() -> list[dict]:
    """Records of every kind the panels look for."""
    return (records(6, cluster="prod-eu-1", verb="get")
            + records(3, cluster="staging-1", verb="patch", mutating=True, user="ops", identity="ops@example.com",
                      audit={"status": "exact", "events": []})
            + records(2, cluster="prod-eu-1", verb="delete", mutating=True, exit_code=1,
                      audit={"status": "missing", "events": []})
            + records(2, cluster="prod-us-1", verb="apply", mutating=True, dry_run=True, exit_code=0,
                      audit={"status": "none", "events": []})
            + [rich_record(), rich_record(id="rich-amb", audit={"status": "ambiguous", "events": []})]
            + [unmatched_document(
                {"audit_id": f"u-{i}", "cluster": "prod-eu", "server": "https://prod-eu:6443", "time": r["started_at"],
                 "user": "mallory", "impersonated_user": None, "user_agent": "kubectl/v1.32.4 (linux/amd64)",
                 "verb": verb, "resource": "secrets", "subresource": None, "namespace": "prod", "name": "db",
                 "code": 200, "stage": "ResponseComplete", "unmatched": True})
               for i, (verb, r) in enumerate(zip(("get", "delete"), records(2)))])


def test_files_are_what_generate_py_writes():
    gen = _generator()
    assert KIBANA.read_text() == "".join(json.dumps(o, sort_keys=True) + "\n" for o in gen.kibana_objects())
    assert GRAFANA.read_text() == json.dumps(gen.grafana_dashboard(), indent=2, sort_keys=True) + "\n"


# --- Kibana ----------------------------------------------------------------------------------------


def kibana_objects() -> list[dict]:
    return [json.loads(line) for line in KIBANA.read_text().splitlines() if line.strip()]


def test_kibana_saved_objects_are_well_formed():
    objects = kibana_objects()
    ids = {(o["type"], o["id"]) for o in objects}
    assert len(ids) == len(objects)
    assert {o["type"] for o in objects} == {"index-pattern", "visualization", "search", "dashboard"}
    for o in objects:
        assert set(o) >= {"id", "type", "attributes", "references"} and o["attributes"]["title"]
        for ref in o["references"]:
            assert (ref["type"], ref["id"]) in ids, f"{o['id']}: dangling reference {ref}"
        if o["type"] in ("visualization", "search"):
            source = json.loads(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
            assert source["indexRefName"] in {r["name"] for r in o["references"]}
        if o["type"] == "dashboard":
            panels = json.loads(o["attributes"]["panelsJSON"])
            assert {p["panelRefName"] for p in panels} == {r["name"] for r in o["references"]}


def _panel_fields(o: dict) -> tuple[str, list[dict], list[str]]:
    """(query, aggs, columns) of a visualization or saved search."""
    source = json.loads(o["attributes"]["kibanaSavedObjectMeta"]["searchSourceJSON"])
    query = source["query"]["query"]
    assert source["query"]["language"] == "lucene"
    if o["type"] == "visualization":
        return query, json.loads(o["attributes"]["visState"])["aggs"], []
    return query, [], o["attributes"]["columns"] + [s[0] for s in o["attributes"]["sort"]]


def _query_fields(query: str) -> set[str]:
    return set(re.findall(r"([A-Za-z_@][\w.@]*):", query))


def _source_has(doc: dict, dotted: str) -> bool:
    value = doc
    for part in dotted.split("."):
        if isinstance(value, list):
            value = value[0] if value else None
        if not isinstance(value, dict) or part not in value:
            return False
        value = value[part]
    return True


def _es_aggs(aggs: list[dict]) -> dict:
    """The visualization's bucket aggregations, nested in order, as the search API takes them."""
    body: dict = {}
    cursor = body
    for agg in aggs:
        if agg["type"] == "count":
            continue
        params = agg["params"]
        if agg["type"] == "terms":
            spec = {"terms": {"field": params["field"], "size": params["size"]}}
        elif agg["type"] == "date_histogram":
            spec = {"date_histogram": {"field": params["field"], "fixed_interval": "1h", "min_doc_count": 1}}
        else:
            raise AssertionError(f"aggregation type {agg['type']} not covered by this test")
        cursor[f"a{agg['id']}"] = spec
        spec["aggs"] = {}
        cursor = spec["aggs"]
    return body


def test_every_kibana_field_exists_in_what_bulk_delivered(opensearch):
    index = "kubectl-record-dashboards"
    objects = kibana_objects()
    pattern = next(o for o in objects if o["type"] == "index-pattern")["attributes"]
    assert re.fullmatch(pattern["title"].replace("*", ".*"), index)
    port = opensearch.rsplit(":", 1)[1]
    recs = corpus()
    assert open_destination(f"opensearch://127.0.0.1:{port}/{index}").send(recs).ok
    requests.post(f"{opensearch}/{index}/_refresh", timeout=10)
    caps = requests.get(f"{opensearch}/{index}/_field_caps", params={"fields": "*"}, timeout=10).json()["fields"]
    docs = [h["_source"] for h in requests.post(f"{opensearch}/{index}/_search", json={"size": 100},
                                                timeout=10).json()["hits"]["hits"]]
    assert len(docs) == len(recs)
    assert pattern["timeFieldName"] in caps and "date" in caps[pattern["timeFieldName"]]
    checked = set()
    for o in objects:
        if o["type"] not in ("visualization", "search"):
            continue
        query, aggs, columns = _panel_fields(o)
        fields = _query_fields(query) | {a["params"]["field"] for a in aggs if "field" in a["params"]} | set(columns)
        for name in fields:
            assert name in caps, f"{o['id']}: field {name} is not in the delivered index"
            base = name[: -len(".keyword")] if name.endswith(".keyword") else name
            assert any(_source_has(d, base) for d in docs), f"{o['id']}: no delivered document has {base}"
            checked.add(name)
        # the panel's own query and aggregations, run on the real server, find what they are for
        body = {"size": 5, "query": {"query_string": {"query": query}}, "track_total_hits": True}
        if aggs:
            body["aggs"] = _es_aggs(aggs)
        if columns:
            body["sort"] = [{"@timestamp": {"order": "desc"}}]
        answer = requests.post(f"{opensearch}/{index}/_search", json=body, timeout=10)
        assert answer.status_code == 200, f"{o['id']}: {answer.text[:300]}"
        result = answer.json()
        assert result["hits"]["total"]["value"] > 0, f"{o['id']}: its query matches nothing: {query}"
        if aggs:
            first = next(iter(result["aggregations"].values()))
            assert first["buckets"], f"{o['id']}: no buckets"
    assert {"cluster.keyword", "verb.keyword", "exit_code", "audit.status.keyword", "@timestamp",
            "mutating", "dry_run"} <= checked
    # what the panels mean, checked on the server
    def count(q):
        return requests.post(f"{opensearch}/{index}/_count", json={"query": {"query_string": {"query": q}}},
                             timeout=10).json()["count"]
    gen = _generator()
    assert count(gen.FAILED) == sum(1 for r in recs if r["exit_code"] not in (0, None))
    assert count(gen.MUTATING) == sum(1 for r in recs if r["mutating"] and r["dry_run"] is False)
    assert count(gen.UNMATCHED) == sum(1 for r in recs if (r["audit"] or {}).get("status") in
                                       ("missing", "ambiguous", "partial"))
    assert count(gen.UNRECORDED) == sum(1 for r in recs if r["source"] == "audit") == 2


# --- Grafana (Loki) --------------------------------------------------------------------------------


def _loki_entries(recs: list[dict]) -> list[dict]:
    """Each entry's labels and structured metadata together, as LogQL label filters see them."""
    out = []
    for stream in loki.push_body(recs)["streams"]:
        for _, line, meta in stream["values"]:
            out.append({**stream["stream"], **meta})
    return out


_FILTER = re.compile(r'\|\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def _logql_parts(expr: str) -> tuple[dict, list[tuple[str, str, str]], list[str]]:
    selector = re.search(r"\{([^}]*)\}", expr).group(1)
    matchers = {m[0]: (m[1], m[2]) for m in re.findall(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"', selector)}
    filters = _FILTER.findall(expr)
    by = [n.strip() for group in re.findall(r"by\s*\(([^)]*)\)", expr) for n in group.split(",") if n.strip()]
    return matchers, filters, by


def _holds(entry: dict, name: str, op: str, value: str) -> bool:
    value = value.replace("$cluster", ".*")
    actual = entry.get(name, "")
    if op == "=":
        return actual == value
    if op == "!=":
        return actual != value
    matched = re.fullmatch(value, actual) is not None
    return matched if op == "=~" else not matched


def test_every_grafana_query_uses_what_the_loki_body_carries():
    dashboard = json.loads(GRAFANA.read_text())
    entries = _loki_entries(corpus())
    names = set().union(*entries)
    stream_labels = set().union(*(s["stream"] for s in loki.push_body(corpus())["streams"]))
    assert stream_labels == {"service_name", "host", "cluster"}  # low cardinality only
    exprs = [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]
    exprs += [(v["name"], v["query"]) for v in dashboard["templating"]["list"] if v["type"] == "query"]
    assert all(p["datasource"]["type"] == "loki" for p in dashboard["panels"])
    for title, expr in exprs:
        assert expr.count("(") == expr.count(")") and expr.count("{") == expr.count("}"), title
        matchers, filters, by = _logql_parts(expr)
        for label in matchers:
            assert label in stream_labels, f"{title}: stream selector on {label}, which is not a stream label"
        for name, _, _ in filters:
            assert name in names, f"{title}: filters on {name}, which no delivered entry carries"
        for name in by:
            assert name in names, f"{title}: groups by {name}, which no delivered entry carries"
        selected = [e for e in entries if all(_holds(e, n, op, v) for n, (op, v) in matchers.items())
                    and all(_holds(e, n, op, v) for n, op, v in filters)]
        assert selected, f"{title}: selects no delivered entry"
    panels = {p["title"]: p for p in dashboard["panels"]}

    def selected(title):
        _, filters, _ = _logql_parts(panels[title]["targets"][0]["expr"])
        return [e for e in entries if all(_holds(e, n, op, v) for n, op, v in filters)]

    recs = corpus()
    assert len(selected("Failed commands")) == sum(1 for r in recs if r["exit_code"] not in (0, None))
    assert len(selected("Mutating commands")) == sum(1 for r in recs if r["mutating"] and r["dry_run"] is False)
    assert len(selected("Audit: commands without a server-side match")) == sum(
        1 for r in recs if (r["audit"] or {}).get("status") in ("missing", "ambiguous", "partial"))
    assert len(selected("Audit: server-side kubectl activity without a record")) == 2
