"""`stats`: figures checked against the records, the text report, the filters, the chart."""

from __future__ import annotations

import json
import time
from datetime import datetime

from kubectl_record import stats
from tests.recordfactory import make_record, st  # noqa: F401 (fixture)


def _fill(st):
    return st.add(
        make_record("get pods", context="prod", namespace="payments", ago=3600),
        make_record("delete deploy web", context="prod", namespace="payments", resource="deployments",
                    mutating=True, exit_code=1, ago=2 * 86400),
        make_record("get pods", context="dev", namespace="team", ago=5 * 86400),
        make_record("apply -f x.yaml", context="dev", namespace="team", resource=None, mutating=True,
                    exit_code=None, state="imported", ago=40 * 86400),
        make_record("rollout restart deploy api", verb="rollout restart", context="dev", namespace=None,
                    resource="deployments", mutating=True, exit_code=2, ago=60),
    )


def test_json_report_counts(st):
    recs = _fill(st)
    result = st.run("stats", "-o", "json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    o = report["overall"]
    assert o["count"] == 5 and o["contexts"] == 2
    assert o["failed"] == 2 and o["exit_unknown"] == 1 and o["failure_rate"] == 0.5
    assert o["mutating"] == 3 and o["read_only"] == 2
    ctx = {c["context"]: c for c in report["contexts"]}
    assert ctx["dev"]["count"] == 3 and ctx["prod"]["count"] == 2
    assert ctx["prod"]["failed"] == 1 and ctx["prod"]["failure_rate"] == 0.5
    assert report["verbs"][0] == {"name": "get", "count": 2}
    assert {v["name"] for v in report["verbs"]} == {"get", "delete", "apply", "rollout restart"}
    assert {r["name"]: r["count"] for r in report["resources"]} == {"deployments": 2, "pods": 2}
    assert {n["name"]: n["count"] for n in report["namespaces"]} == {"payments": 2, "team": 2}
    assert sum(h["count"] for h in report["hours"]) == 5
    assert len(report["hours"]) == 24 and len(recs) == 5
    days = report["days"]
    assert len(days) == 30 and days[-1]["day"] == datetime.now().strftime("%Y-%m-%d")
    assert sum(d["count"] for d in days) == 4  # the 40-day-old one is outside the default 30 days


def test_filters_apply_to_stats(st):
    _fill(st)
    report = json.loads(st.run("stats", "--context", "prod", "-o", "json").stdout)
    assert report["overall"]["count"] == 2
    report = json.loads(st.run("stats", "--since", "7d", "--mutating", "-o", "json").stdout)
    assert report["overall"]["count"] == 2
    assert len(report["days"]) == 8  # the --since span
    report = json.loads(st.run("stats", "--days", "90", "-o", "json").stdout)
    assert len(report["days"]) == 90 and sum(d["count"] for d in report["days"]) == 5


def test_local_hours_and_days_are_exact(st):
    base = datetime(2026, 3, 1, 9, 30).timestamp()  # local time
    st.add(*[make_record("get pods", ago=time.time() - (base + i * 86400)) for i in range(3)])
    report = json.loads(st.run("stats", "--days", "400", "-o", "json").stdout)
    hours = {h["hour"]: h["count"] for h in report["hours"] if h["count"]}
    assert hours == {9: 3}
    days = {d["day"]: d["count"] for d in report["days"] if d["count"]}
    assert days == {"2026-03-01": 1, "2026-03-02": 1, "2026-03-03": 1}


def test_unfiltered_hour_buckets_match_filtered_grouping(st):
    st.add(*[make_record("get pods", ago=i * 3517.0) for i in range(200)])
    conn = st.conn
    unfiltered = stats.collect(conn, "", [], days=30)
    filtered = stats.collect(conn, "started_at >= ?", ["0"], days=30)
    assert unfiltered["hours"] == filtered["hours"]
    assert unfiltered["days"] == filtered["days"]


def test_text_report_has_every_section_and_a_chart(st):
    _fill(st)
    result = st.run("stats")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for section in ("PER CONTEXT", "TOP VERBS", "TOP RESOURCES", "TOP NAMESPACES", "HOURS (local time)",
                    "ACTIVITY PER DAY"):
        assert section in out
    assert "█" in out and "└" in out
    assert "5 record(s) in 2 context(s)" in out
    assert "\x1b[" not in out


def test_empty_store_and_bad_filter(st):
    result = st.run("stats")
    assert result.exit_code == 0 and "0 record(s)" in result.stdout
    bad = st.run("stats", "--since", "yesterdayish")
    assert bad.exit_code == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_stats_subprocess_yaml(st):
    import yaml

    _fill(st)
    proc = st.subprocess("stats", "-o", "yaml")
    assert proc.returncode == 0, proc.stderr
    assert yaml.safe_load(proc.stdout)["overall"]["count"] == 5
