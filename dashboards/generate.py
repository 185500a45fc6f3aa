"""Writes the shipped dashboards (run it after changing a panel; tests/test_dashboards.py checks
the files are current and that every field a panel queries exists in what is delivered):

    kibana/kubectl-record.ndjson     Kibana saved objects for the `_bulk` index
                                     (Stack Management > Saved objects > Import)
    grafana/kubectl-record-loki.json a Grafana dashboard on a Loki data source
                                     (Dashboards > New > Import)

Kibana: a data view `kubectl-record*` on @timestamp, aggregation-based visualizations whose
queries are Lucene syntax (so the test runs them unchanged against a real OpenSearch-API
server), two saved searches and a dashboard. Field names follow the dynamic mapping the
records get: strings are `text` with a `.keyword` sub-field.
Grafana: LogQL over the streams the Loki destination writes (labels service_name, host,
cluster; everything else is structured metadata).
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
INDEX_PATTERN_ID = "kubectl-record-records"
INDEX_TITLE = "kubectl-record*"
REF = "kibanaSavedObjectMeta.searchSourceJSON.index"

# --- Kibana ---------------------------------------------------------------------------------------

FAILED = "exit_code:[1 TO *]"
MUTATING = "mutating:true AND dry_run:false"
UNMATCHED = "audit.status:(missing OR ambiguous OR partial)"
# What the collector forwards of server-side kubectl requests that no record explains.
UNRECORDED = "source:audit AND audit.status:unmatched"


def _search_source(query: str) -> dict:
    return {"kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
        {"query": {"query": query, "language": "lucene"}, "filter": [], "indexRefName": REF})}}


def _vis(vid: str, title: str, vis_type: str, query: str, aggs: list[dict], params: dict | None = None) -> dict:
    vis_state = {"title": title, "type": vis_type, "aggs": aggs, "params": params or {}}
    return {"id": vid, "type": "visualization",
            "attributes": {"title": title, "description": "", "version": 1, "uiStateJSON": "{}",
                           "visState": json.dumps(vis_state), **_search_source(query)},
            "references": [{"name": REF, "type": "index-pattern", "id": INDEX_PATTERN_ID}]}


def _count() -> dict:
    return {"id": "1", "enabled": True, "type": "count", "schema": "metric", "params": {}}


def _terms(aid: str, field: str, schema: str = "bucket", size: int = 10) -> dict:
    return {"id": aid, "enabled": True, "type": "terms", "schema": schema,
            "params": {"field": field, "size": size, "order": "desc", "orderBy": "1", "otherBucket": True,
                       "missingBucket": False}}


def _histogram(aid: str = "2") -> dict:
    return {"id": aid, "enabled": True, "type": "date_histogram", "schema": "segment",
            "params": {"field": "@timestamp", "interval": "auto", "min_doc_count": 1, "extended_bounds": {}}}


def _search(sid: str, title: str, query: str, columns: list[str]) -> dict:
    return {"id": sid, "type": "search",
            "attributes": {"title": title, "description": "", "columns": columns, "sort": [["@timestamp", "desc"]],
                           **_search_source(query)},
            "references": [{"name": REF, "type": "index-pattern", "id": INDEX_PATTERN_ID}]}


def kibana_objects() -> list[dict]:
    objects = [{
        "id": INDEX_PATTERN_ID, "type": "index-pattern",
        "attributes": {"title": INDEX_TITLE, "name": "kubectl-record", "timeFieldName": "@timestamp"},
        "references": [],
    }]
    objects += [
        _vis("kr-activity-per-cluster", "kubectl activity per cluster", "histogram", "*",
             [_count(), _histogram(), _terms("3", "cluster.keyword", "group", 20)],
             {"type": "histogram", "mode": "stacked", "addLegend": True, "legendPosition": "right"}),
        _vis("kr-mutating-per-cluster", "Mutating commands by cluster and verb", "table", MUTATING,
             [_count(), _terms("2", "cluster.keyword", size=20), _terms("3", "verb.keyword", size=20)],
             {"perPage": 20}),
        _vis("kr-mutating-users", "Who mutates (kubeconfig user, server-side identity)", "table", MUTATING,
             [_count(), _terms("2", "user.keyword", size=20), _terms("3", "identity.keyword", size=20)],
             {"perPage": 20}),
        _vis("kr-failures", "Failed commands by verb and cluster", "table", FAILED,
             [_count(), _terms("2", "verb.keyword", size=20), _terms("3", "cluster.keyword", size=20),
              _terms("4", "exit_code", size=10)], {"perPage": 20}),
        _vis("kr-failures-over-time", "Failures over time", "histogram", FAILED,
             [_count(), _histogram(), _terms("3", "cluster.keyword", "group", 10)],
             {"type": "histogram", "mode": "stacked"}),
        _vis("kr-audit-unmatched", "Audit: commands without a server-side match", "table", UNMATCHED,
             [_count(), _terms("2", "audit.status.keyword", size=10), _terms("3", "cluster.keyword", size=20),
              _terms("4", "user.keyword", size=20)], {"perPage": 20}),
        _vis("kr-audit-unrecorded", "Audit: server-side kubectl activity without a record", "table", UNRECORDED,
             [_count(), _terms("2", "cluster.keyword", size=20), _terms("3", "identity.keyword", size=20),
              _terms("4", "verb.keyword", size=20)], {"perPage": 20}),
        _search("kr-search-mutating", "kubectl: mutating commands", MUTATING,
                ["cluster", "context", "namespace", "user", "identity", "host", "command", "exit_code",
                 "audit.status"]),
        _search("kr-search-failures", "kubectl: failed commands", FAILED,
                ["cluster", "context", "user", "host", "command", "exit_code", "duration_ms"]),
    ]
    panels, refs = [], []
    layout = [("kr-activity-per-cluster", "visualization", 0, 0, 48, 12),
              ("kr-mutating-per-cluster", "visualization", 0, 12, 24, 14),
              ("kr-mutating-users", "visualization", 24, 12, 24, 14),
              ("kr-failures-over-time", "visualization", 0, 26, 24, 12),
              ("kr-failures", "visualization", 24, 26, 24, 12),
              ("kr-audit-unmatched", "visualization", 0, 38, 24, 14),
              ("kr-search-mutating", "search", 24, 38, 24, 14),
              ("kr-audit-unrecorded", "visualization", 0, 52, 24, 14),
              ("kr-search-failures", "search", 24, 52, 24, 14)]
    for i, (oid, otype, x, y, w, h) in enumerate(layout, 1):
        panels.append({"panelIndex": str(i), "gridData": {"x": x, "y": y, "w": w, "h": h, "i": str(i)},
                       "embeddableConfig": {}, "panelRefName": f"panel_{i}", "version": "8.11.0"})
        refs.append({"name": f"panel_{i}", "type": otype, "id": oid})
    objects.append({
        "id": "kr-dashboard", "type": "dashboard",
        "attributes": {"title": "kubectl-record: kubectl activity", "description":
                       "Activity per cluster, mutating commands, failures, and what the audit log and the records"
                       " do not match on either side",
                       "panelsJSON": json.dumps(panels), "optionsJSON": json.dumps({"useMargins": True}),
                       "timeRestore": True, "timeFrom": "now-7d", "timeTo": "now", "version": 1,
                       "kibanaSavedObjectMeta": {"searchSourceJSON": json.dumps(
                           {"query": {"query": "", "language": "lucene"}, "filter": []})}},
        "references": refs,
    })
    return objects


# --- Grafana (Loki) -------------------------------------------------------------------------------

SEL = '{service_name="kubectl-record", cluster=~"$cluster"}'
DS = {"type": "loki", "uid": "${datasource}"}


def _panel(pid: int, title: str, ptype: str, expr: str, grid: tuple, **extra) -> dict:
    target = {"refId": "A", "datasource": DS, "expr": expr, "queryType": "range"}
    if ptype == "table":
        target["queryType"] = "instant"
    panel = {"id": pid, "title": title, "type": ptype, "datasource": DS, "targets": [target],
             "gridPos": dict(zip(("x", "y", "w", "h"), grid))}
    panel.update(extra)
    return panel


def grafana_dashboard() -> dict:
    panels = [
        _panel(1, "kubectl activity per cluster", "timeseries",
               f"sum by (cluster) (count_over_time({SEL} [$__interval]))", (0, 0, 24, 8)),
        _panel(2, "Mutating commands per verb", "timeseries",
               f'sum by (verb) (count_over_time({SEL} | mutating="true" | dry_run="false" [$__interval]))',
               (0, 8, 12, 8)),
        _panel(3, "Who mutates", "table",
               f'topk(20, sum by (cluster, user, identity) (count_over_time({SEL} | mutating="true" [$__range])))',
               (12, 8, 12, 8)),
        _panel(4, "Mutating commands", "logs", f'{SEL} | mutating="true" | dry_run="false"', (0, 16, 24, 10),
               options={"showTime": True, "wrapLogMessage": True, "enableLogDetails": True}),
        _panel(5, "Failures per cluster", "timeseries",
               f'sum by (cluster) (count_over_time({SEL} | exit_code=~"[1-9][0-9]*" [$__interval]))',
               (0, 26, 12, 8)),
        _panel(6, "Failed commands", "logs", f'{SEL} | exit_code=~"[1-9][0-9]*"', (12, 26, 12, 8),
               options={"showTime": True, "enableLogDetails": True}),
        _panel(7, "Audit: commands without a server-side match", "logs",
               f'{SEL} | audit_status=~"missing|ambiguous|partial"', (0, 34, 12, 10),
               options={"showTime": True, "enableLogDetails": True}),
        _panel(8, "Audit: server-side kubectl activity without a record", "logs",
               f'{SEL} | source="audit" | audit_status="unmatched"', (12, 34, 12, 10),
               options={"showTime": True, "enableLogDetails": True}),
    ]
    return {
        "__inputs": [{"name": "DS_LOKI", "label": "Loki", "type": "datasource", "pluginId": "loki",
                      "pluginName": "Loki"}],
        "title": "kubectl-record: kubectl activity (Loki)",
        "uid": "kubectl-record-loki",
        "tags": ["kubectl", "kubernetes", "audit"],
        "timezone": "utc",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-7d", "to": "now"},
        "templating": {"list": [
            {"name": "datasource", "label": "Loki", "type": "datasource", "query": "loki",
             "current": {}, "hide": 0},
            {"name": "cluster", "label": "Cluster", "type": "query", "datasource": DS,
             "query": 'label_values({service_name="kubectl-record"}, cluster)',
             "definition": 'label_values({service_name="kubectl-record"}, cluster)',
             "includeAll": True, "multi": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
             "refresh": 2},
        ]},
        "panels": panels,
    }


def write() -> list[Path]:
    kib = HERE / "kibana" / "kubectl-record.ndjson"
    graf = HERE / "grafana" / "kubectl-record-loki.json"
    kib.parent.mkdir(exist_ok=True)
    graf.parent.mkdir(exist_ok=True)
    kib.write_text("".join(json.dumps(o, sort_keys=True) + "\n" for o in kibana_objects()))
    graf.write_text(json.dumps(grafana_dashboard(), indent=2, sort_keys=True) + "\n")
    return [kib, graf]


if __name__ == "__main__":
    for path in write():
        print(path)
