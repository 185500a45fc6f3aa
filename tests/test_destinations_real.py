"""Destinations against real servers: OpenSearch `_bulk` on osmem-server (PyPI; a real server
speaking the OpenSearch API) and OTLP/HTTP on rotel (PyPI; a real OpenTelemetry collector), and
the outbox driving them through a fault-injecting proxy (sync.deliver, one position per URL)."""

from __future__ import annotations

import json
import sqlite3

import pytest
import requests

from kubectl_record import store, sync
from kubectl_record.destinations import adapter, open_destination, otlp
from kubectl_record.destinations.opensearch import document

from .faultproxy import FaultProxy
from .test_destinations_kit import (  # noqa: F401  (fixtures)
    opensearch, os_search, records, rich_record, rotel, rotel_log_records, rotel_value)

# --- OpenSearch _bulk on osmem-server -------------------------------------------------------------


def _index(request) -> str:
    return "kr-" + request.node.name.lower().replace("_", "-")[:40].strip("-[]")


def test_bulk_delivers_every_record_into_exactly_the_index(opensearch, request):
    index = _index(request)
    recs = records(40) + [rich_record()]
    dest = open_destination(f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}")
    result = dest.send(recs)
    assert result.ok and sorted(result.delivered) == sorted(r["id"] for r in recs) and not result.rejected
    hits = os_search(opensearch, index)
    assert {h["_index"] for h in hits} == {index}
    assert {h["_id"]: h["_source"] for h in hits} == {r["id"]: json.loads(json.dumps(document(r))) for r in recs}
    assert requests.get(f"{opensearch}/_cat/indices?format=json", timeout=10).status_code == 200


def test_bulk_resend_is_idempotent_and_updates_changed_records(opensearch, request):
    index = _index(request)
    url = f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}"
    recs = records(20)
    assert open_destination(url).send(recs).ok
    again = open_destination(url).send(recs)
    assert again.ok and sorted(again.delivered) == sorted(r["id"] for r in recs)  # 409s count as delivered
    assert len(os_search(opensearch, index)) == 20
    changed = [dict(recs[3], exit_code=7, audit={"status": "missing", "events": []})]
    assert open_destination(url).send(changed).delivered == [recs[3]["id"]]
    hits = {h["_id"]: h["_source"] for h in os_search(opensearch, index)}
    assert len(hits) == 20 and hits[recs[3]["id"]]["exit_code"] == 7
    assert hits[recs[3]["id"]]["audit"]["status"] == "missing"
    # without update_existing, a 409 stands (data-stream behaviour)
    stale = [dict(recs[3], exit_code=8)]
    assert open_destination(url, {"update_existing": False}).send(stale).delivered == [recs[3]["id"]]
    assert {h["_id"]: h["_source"] for h in os_search(opensearch, index)}[recs[3]["id"]]["exit_code"] == 7


def test_bulk_per_item_errors_are_triaged(opensearch, request):
    index = _index(request)
    url = f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}"
    good = records(5)
    assert open_destination(url).send(good[:1]).ok  # duration_ms is now mapped as a number
    bad = records(2, duration_ms="not-a-number")
    result = open_destination(url).send(good + bad)
    assert sorted(result.delivered) == sorted(r["id"] for r in good)  # good[0] again: 409, delivered
    assert set(result.rejected) == {r["id"] for r in bad}
    assert all(v.startswith("400 mapper_parsing_exception") for v in result.rejected.values())
    assert result.ok  # nothing to retry
    assert {h["_id"] for h in os_search(opensearch, index)} == {r["id"] for r in good}


def test_bulk_gzip_and_plain(opensearch, request):
    index = _index(request)
    url = f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}"
    for gzip_on, recs in ((True, records(10)), (False, records(10))):
        dest = open_destination(url, {"gzip": gzip_on})
        sent = []
        post = dest.session.post
        dest.session.post = lambda *a, **kw: sent.append(kw["headers"]) or post(*a, **kw)
        assert dest.send(recs).ok
        assert (sent[0].get("Content-Encoding") == "gzip") is gzip_on
    assert len(os_search(opensearch, index)) == 20


def _local_store(tmp_path, monkeypatch, n: int) -> sqlite3.Connection:
    from .collectorkit import synthetic

    monkeypatch.setenv("KUBECTL_RECORD_HOME", str(tmp_path / "state"))
    conn = store.connect(str(tmp_path / "state" / "records.db"))
    store.insert_local(conn, synthetic(n))
    return conn


def test_outbox_through_faults_loses_nothing_and_doubles_nothing(opensearch, request, tmp_path, monkeypatch):
    """sync.deliver drives the destination (its own outbox position, keyed by the masked URL)
    through resets before and after the server committed, 503s and 429s."""
    index = _index(request)
    conn = _local_store(tmp_path, monkeypatch, 120)
    upstream = int(opensearch.rsplit(":", 1)[1])
    faults = {1: "503", 2: "reset_after", 4: "reset_before", 5: "429", 7: "reset_after"}
    with FaultProxy(upstream, plan=lambda n: faults.get(n, "pass")) as proxy:
        url = f"opensearch://user:pw@127.0.0.1:{proxy.port}/{index}"
        result, warnings = adapter.push_to(conn, url, {}, wait=True, batch_size=25,
                                           backoff=sync.Backoff(base=0.01, cap=0.02))
    assert result.delivered == 120 and result.pending == 0 and not warnings
    assert {"503", "reset_after", "reset_before", "429"} <= set(proxy.actions)
    hits = os_search(opensearch, index)
    ids = {r[0] for r in conn.execute("SELECT id FROM records")}
    assert len(hits) == 120 and {h["_id"] for h in hits} == ids
    name = "opensearch://user:***@127.0.0.1:%d/%s" % (proxy.port, index)
    assert conn.execute("SELECT COUNT(*) FROM sync_queue WHERE dest = ?", (name,)).fetchone()[0] == 0
    assert conn.execute("SELECT delivered FROM sync_state WHERE dest = ?", (name,)).fetchone()[0] == 120


def test_outbox_dead_letters_carry_the_servers_reason(opensearch, request, tmp_path, monkeypatch):
    index = _index(request)
    conn = _local_store(tmp_path, monkeypatch, 6)
    conn.execute("UPDATE records SET duration_ms = 'x' WHERE rowid IN (SELECT rowid FROM records LIMIT 2 OFFSET 3)")
    url = f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}"
    # map duration_ms as a number first
    assert open_destination(url).send(records(1)).ok
    result, _ = adapter.push_to(conn, url, {}, wait=True, backoff=sync.Backoff(base=0.01, cap=0.02))
    assert result.delivered == 4 and result.dead == 2 and result.pending == 0
    dead = conn.execute("SELECT kind, ref, reason FROM sync_dead WHERE dest = ?", (url,)).fetchall()
    assert len(dead) == 2 and all(k == "record" and "mapper_parsing_exception" in r for k, _, r in dead)
    # a second destination has its own position: it starts with every record
    other = f"opensearch://127.0.0.1:{opensearch.rsplit(':', 1)[1]}/{index}-copy"
    result, _ = adapter.push_to(conn, other, {}, wait=True)
    assert (result.delivered, result.dead) == (4, 2)
    assert {r[0] for r in conn.execute("SELECT dest FROM sync_state")} >= {url, other}


def test_refused_credentials_stop_the_push_and_keep_everything_queued(tmp_path, monkeypatch):
    from kubectl_record.collector.client import Refused

    from .test_destinations_kit import Receiver

    conn = _local_store(tmp_path, monkeypatch, 3)
    with Receiver(lambda req: (401, {}, b"bad key")) as rx:
        url = f"otlp://127.0.0.1:{rx.port}"
        with pytest.raises(Refused):
            adapter.push_to(conn, url, {})
    assert conn.execute("SELECT COUNT(*) FROM sync_queue WHERE dest = ?", (url,)).fetchone()[0] == 3


# --- OTLP on rotel --------------------------------------------------------------------------------


@pytest.mark.parametrize("compress", [True, False])
def test_otlp_what_rotel_decoded_matches_what_was_sent(rotel, compress):
    recs = [rich_record(host="ops-1"), *records(4, host="laptop-2"), rich_record(id="rich-2", exit_code=0,
                                                                                 host="ops-1")]
    dest = open_destination(rotel.url, {"gzip": compress})
    result = dest.send(recs)
    assert result.ok and sorted(result.delivered) == sorted(r["id"] for r in recs) and not result.warnings
    decoded = rotel_log_records(rotel.wait_for(len(recs)))
    assert len(decoded) == len(recs)
    by_uid = {d["attributes"]["log.record.uid"]: d for d in decoded}
    for rec in recs:
        got = by_uid[rotel_value(rec["id"])]
        sent = otlp.attributes(rec)
        assert got["attributes"] == {k: rotel_value(v) for k, v in sent.items()}
        assert got["Timestamp"] == str(otlp.rfc3339_to_ns(rec["started_at"]))
        assert got["ObservedTimestamp"] == str(otlp.rfc3339_to_ns(rec["ended_at"]))
        assert got["EventName"] == "kubectl.command"
        assert got["Body"] == rotel_value(rec["command"])
        assert got["SeverityText"] == ("ERROR" if rec["exit_code"] else "INFO")
        assert got["resource"]["host.name"] == rotel_value(rec["host"])
        assert got["resource"]["service.name"] == "Str(kubectl-record)"


def test_configured_destinations_and_background_pass(opensearch, request, tmp_path, monkeypatch):
    from kubectl_record import paths

    from .test_destinations_kit import Receiver

    index = _index(request)
    conn = _local_store(tmp_path, monkeypatch, 5)
    port = opensearch.rsplit(":", 1)[1]
    seen = []
    with Receiver(lambda req: (seen.append(req["headers"]) or 204, {}, b"")) as rx:
        os_url = f"opensearch://admin:pw@127.0.0.1:{port}/{index}"
        loki_url = f"loki://127.0.0.1:{rx.port}"
        with open(paths.config_file(), "w") as f:
            f.write(f'[destinations]\nurls = ["{os_url}", "{loki_url}"]\n'
                    f'[destinations.options."opensearch://admin:***@127.0.0.1:{port}/{index}"]\ngzip = false\n'
                    f'[destinations.options."{loki_url}"]\ntenant = "platform"\nmax_age = 0\n')
        assert adapter.options_for(os_url) == {"gzip": False}
        assert adapter.options_for(loki_url) == {"tenant": "platform", "max_age": 0}
        results = adapter.background_pass(conn)
    names = sorted(results)
    assert names == sorted([f"opensearch://admin:***@127.0.0.1:{port}/{index}", loki_url])
    assert all(r.delivered == 5 and r.pending == 0 for r in results.values())
    assert seen and seen[0]["X-Scope-OrgID"] == "platform"
    assert len(os_search(opensearch, index)) == 5

