"""The destination layer without real servers: URL forms and masking, the encoders against the
documented formats (Loki push JSON, Standard Webhooks, OTLP/JSON), and each destination's retry
rules against a scriptable HTTP receiver. Real servers: test_destinations_real.py.

Loki: no Loki server can be installed here (none in any reachable registry), so its body is
checked against Loki's documented push format and its answers are played by the receiver.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest

from kubectl_record.destinations import DestinationError, is_destination_url, mask_url, open_destination, parse_url
from kubectl_record.destinations import loki, otlp, webhook
from kubectl_record.destinations.base import rfc3339_to_ns

from .test_destinations_kit import Receiver, records, rich_record

# --- URLs -------------------------------------------------------------------------------------


@pytest.mark.parametrize("url, scheme, base, extra", [
    ("opensearch://127.0.0.1:9200/kr", "http", "http://127.0.0.1:9200", ("index", "kr")),
    ("opensearch://es.example/kr-logs", "https", "https://es.example:9200", ("index", "kr-logs")),
    ("elasticsearch+http://es.example:9201/a.b", "http", "http://es.example:9201", ("index", "a.b")),
    ("opensearch+https://localhost:9200/kr", "https", "https://localhost:9200", ("index", "kr")),
    ("otlp://[::1]:4318", "http", "http://[::1]:4318", ("path", "")),
    ("otlp://otel.example", "https", "https://otel.example:4318", ("path", "")),
    ("loki://loki.example/proxy", "https", "https://loki.example:3100", ("path", "/proxy")),
    ("webhook+https://hooks.example/in/abc?x=1", "https", "https://hooks.example", ("query", "x=1")),
    ("webhook://127.0.0.2:8080/h", "http", "http://127.0.0.2:8080", ("path", "/h")),
])
def test_url_forms(url, scheme, base, extra):
    parsed = parse_url(url)
    assert parsed.scheme == scheme and parsed.base == base
    assert getattr(parsed, extra[0]) == extra[1]
    assert is_destination_url(url)


def test_endpoints_and_index_exactly_as_given():
    assert open_destination("opensearch://127.0.0.1:9200/Kr_x".lower()).bulk_url == "http://127.0.0.1:9200/kr_x/_bulk"
    assert open_destination("elasticsearch://h/pre/fix/idx").bulk_url == "https://h:9200/pre/fix/idx/_bulk"
    assert open_destination("otlp://h:4318").logs_url == "https://h:4318/v1/logs"
    assert open_destination("otlp://h:4318/otlp/v1/logs").logs_url == "https://h:4318/otlp/v1/logs"
    assert open_destination("loki://127.0.0.1:3100").push_url == "http://127.0.0.1:3100/loki/api/v1/push"
    assert open_destination("webhook+https://h/a/b?c=d").endpoint == "https://h/a/b?c=d"


@pytest.mark.parametrize("url", ["https://collector.example", "opensearch://h:9200", "opensearch://h:9200/",
                                 "opensearch://h/_all", "opensearch://h/Upper", "kafka://h:9092",
                                 "otlp+ftp://h", "loki://", "opensearch://h/a?x=1"])
def test_bad_urls_are_refused(url):
    with pytest.raises(DestinationError):
        open_destination(url)


def test_credentials_are_masked_everywhere_shown():
    assert mask_url("opensearch://admin:s3cret@es:9200/kr") == "opensearch://admin:***@es:9200/kr"
    assert mask_url("webhook+https://tok123@h/x") == "webhook+https://***@h/x"
    assert mask_url("webhook+https://h/x?token=abc&sig=z&team=ops") == "webhook+https://h/x?token=***&sig=***&team=ops"
    a = open_destination("opensearch://admin:one@127.0.0.1:9200/kr")
    b = open_destination("opensearch://admin:two@127.0.0.1:9200/kr")
    assert a.name == b.name == "opensearch://admin:***@127.0.0.1:9200/kr"  # one outbox position
    assert "one" not in repr(a)


def test_credentials_from_url_and_options_reach_the_wire():
    seen = []
    with Receiver(lambda req: (seen.append(req["headers"]) or 204, {}, b"")) as rx:
        port = rx.port
        open_destination(f"loki://u:p%40ss@127.0.0.1:{port}", {"tenant": "team-a", "max_age": 0}).send(records(1))
        open_destination(f"loki://127.0.0.1:{port}", {"bearer_token": "T0K", "headers": {"X-Extra": "1"},
                                                       "max_age": 0}).send(records(1))
        open_destination(f"opensearch://127.0.0.1:{port}/kr", {"api_key": "QUJD"}).send([])
    assert seen[0]["Authorization"] == "Basic " + base64.b64encode(b"u:p@ss").decode()
    assert seen[0]["X-Scope-OrgID"] == "team-a"
    assert seen[1]["Authorization"] == "Bearer T0K" and seen[1]["X-Extra"] == "1"


def test_rfc3339_to_nanoseconds_is_exact():
    assert rfc3339_to_ns("2026-11-27T19:12:23.123Z") == 1795806743123000000
    assert rfc3339_to_ns("2026-11-27T19:12:23Z") == 1795806743000000000
    assert rfc3339_to_ns("2026-11-27T20:12:23.000000001+01:00") == 1795806743000000001


# --- Loki: the documented push format -----------------------------------------------------------


def test_loki_body_follows_the_documented_push_format():
    """POST /loki/api/v1/push, JSON: {"streams": [{"stream": {label: value}, "values":
    [["<unix epoch in nanoseconds, as a string>", "<log line>", {structured metadata: string}]]}]}."""
    recs = records(3, host="h1") + records(2, host="h2", cluster=None) + [rich_record(host="h1")]
    body = loki.push_body(recs)
    json.dumps(body)  # serialisable as is
    assert set(body) == {"streams"}
    streams = {tuple(sorted(s["stream"].items())): s for s in body["streams"]}
    assert set(streams) == {
        (("cluster", "dev-cluster"), ("host", "h1"), ("service_name", "kubectl-record")),
        (("host", "h2"), ("service_name", "kubectl-record")),
        (("cluster", "prod-eu-1"), ("host", "h1"), ("service_name", "kubectl-record")),
    }
    by_id = {r["id"]: r for r in recs}
    seen = 0
    for stream in body["streams"]:
        assert set(stream) == {"stream", "values"}
        assert all(isinstance(v, str) and v for v in stream["stream"].values())
        stamps = [int(v[0]) for v in stream["values"]]
        assert stamps == sorted(stamps)
        for ts, line, meta in stream["values"]:
            assert isinstance(ts, str) and ts.isdigit() and len(ts) == 19
            assert all(isinstance(k, str) and isinstance(v, str) for k, v in meta.items())
            assert all(k.replace("_", "a").isalnum() and not k[0].isdigit() for k in meta)  # label-name shaped
            rec = by_id[meta["id"]]
            seen += 1
            assert line == rec["command"] and int(ts) == rfc3339_to_ns(rec["started_at"])
            assert "host" not in meta and "cluster" not in meta and "command" not in meta
            assert meta["verb"] == rec["verb"] and meta["mutating"] in ("true", "false")
            assert json.loads(meta["argv"]) == rec["argv"]
            if rec["audit"]:
                assert meta["audit_status"] == rec["audit"]["status"] and json.loads(meta["audit"]) == rec["audit"]
    assert seen == len(recs)


def _loki_like(refuse_ids=()):
    """Answers as Loki does: 204, or 400 naming the refused entries while keeping the others."""
    kept = []

    def respond(req):
        body = json.loads(req["body"])
        bad = []
        for stream in body["streams"]:
            for ts, line, meta in stream["values"]:
                (bad if meta["id"] in refuse_ids else kept).append(meta["id"])
        if bad:
            lines = [f"entry with timestamp {ts} ignored, reason: 'entry too far behind, oldest acceptable "
                     f"timestamp is: 2026-11-27T10:00:00Z'," for ts in bad]
            return 400, {}, ("\n".join(lines) + f"\ntotal ignored: {len(bad)} out of {len(kept) + len(bad)}").encode()
        return 204, {}, b""

    return respond, kept


def test_loki_refused_entries_are_isolated_and_reported():
    recs = records(8)
    respond, kept = _loki_like({recs[5]["id"]})
    with Receiver(respond) as rx:
        dest = open_destination(f"loki://127.0.0.1:{rx.port}")
        result = dest.send(recs)
        assert list(result.rejected) == [recs[5]["id"]]
        assert "too far behind" in result.rejected[recs[5]["id"]]
        assert sorted(result.delivered) == sorted(r["id"] for r in recs if r is not recs[5])
        assert result.ok
        assert rx.requests[0]["headers"]["Content-Encoding"] == "gzip"
    # Loki kept each valid entry once or more; it deduplicates identical entries, so no doubles in Loki.
    assert set(kept) == set(result.delivered)


def test_loki_old_entries_are_refused_with_a_reason_before_sending():
    now = time.time()
    old = records(2, start=now - 8 * 86400)
    fresh = records(2, start=now - 100)
    with Receiver(lambda req: (204, {}, b"")) as rx:
        result = open_destination(f"loki://127.0.0.1:{rx.port}").send(old + fresh)
        assert set(result.rejected) == {r["id"] for r in old}
        assert all("older than Loki accepts" in v for v in result.rejected.values())
        assert set(result.delivered) == {r["id"] for r in fresh}
        sent = json.loads(rx.requests[0]["body"])
        assert sum(len(s["values"]) for s in sent["streams"]) == 2
        # the check can be moved or turned off for a Loki with a longer reject_old_samples_max_age
        result = open_destination(f"loki://127.0.0.1:{rx.port}", {"max_age": "30d"}).send(old)
        assert set(result.delivered) == {r["id"] for r in old}


@pytest.mark.parametrize("status, retry", [(429, True), (500, True), (503, True), (400, False), (422, False)])
def test_loki_retries_like_promtail(status, retry):
    recs = records(1)
    with Receiver(lambda req: (status, {"Retry-After": "7"}, b"nope")) as rx:
        result = open_destination(f"loki://127.0.0.1:{rx.port}").send(recs)
    if retry:
        assert result.retryable_error and result.retry_after == 7.0 and not result.rejected
        assert result.pending([r["id"] for r in recs]) == [recs[0]["id"]]
    else:
        assert not result.retryable_error and set(result.rejected) == {recs[0]["id"]}


def test_refusals_of_us_are_fatal_and_keep_records_queued():
    for status in (401, 403):
        with Receiver(lambda req: (status, {}, b"denied")) as rx:
            for url in (f"loki://127.0.0.1:{rx.port}", f"otlp://127.0.0.1:{rx.port}",
                        f"opensearch://127.0.0.1:{rx.port}/kr", f"webhook://127.0.0.1:{rx.port}/h"):
                result = open_destination(url, {"max_age": 0} if url.startswith("loki") else {}).send(records(2))
                assert result.fatal_error and not result.delivered and not result.rejected, url
    # a redirect is not followed (a POST turned into a GET elsewhere would lose the body)
    with Receiver(lambda req: (301, {"Location": "http://elsewhere/"}, b"")) as rx:
        result = open_destination(f"webhook://127.0.0.1:{rx.port}/h").send(records(1))
        assert result.fatal_error and "redirect" in result.fatal_error and len(rx.requests) == 1


def test_unreachable_is_retryable():
    from .test_destinations_kit import free_port

    port = free_port()
    for url in (f"loki://127.0.0.1:{port}", f"otlp://127.0.0.1:{port}", f"opensearch://127.0.0.1:{port}/kr",
                f"webhook://127.0.0.1:{port}/h"):
        result = open_destination(url, {"max_age": 0} if url.startswith("loki") else {}).send(records(1))
        assert result.retryable_error and "unreachable" in result.retryable_error


# --- Standard Webhooks ---------------------------------------------------------------------------

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()


def test_webhook_signature_is_standard_webhooks():
    recs = [rich_record()]
    with Receiver(lambda req: (200, {}, b"")) as rx:
        dest = open_destination(f"webhook://127.0.0.1:{rx.port}/hook", {"secret": SECRET})
        assert dest.send(recs).delivered == [recs[0]["id"]]
        req = rx.requests[0]
    h = {k.lower(): v for k, v in req["headers"].items()}
    msg_id, ts, sig = h["webhook-id"], h["webhook-timestamp"], h["webhook-signature"]
    assert ts.isdigit() and abs(int(ts) - time.time()) < 60
    # computed here from the specification: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")>
    key = base64.b64decode(SECRET[len("whsec_"):])
    expected = base64.b64encode(hmac.new(key, f"{msg_id}.{ts}.".encode() + req["body"], hashlib.sha256).digest())
    assert sig == "v1," + expected.decode()
    assert webhook.verify(SECRET, req["headers"], req["body"])
    assert not webhook.verify(SECRET, req["headers"], req["body"] + b" ")
    payload = json.loads(req["body"])
    assert payload["type"] == "kubectl.command" and payload["data"] == recs[0]
    assert payload["timestamp"] == recs[0]["started_at"]
    assert "Content-Encoding" not in req["headers"]


def test_webhook_id_is_stable_across_retries_and_new_for_changed_content():
    rec = records(1)[0]
    a, _ = webhook.message(rec)
    b, _ = webhook.message(dict(rec))
    c, _ = webhook.message({**rec, "exit_code": 3})
    assert a == b != c and a.startswith(f"msg_{rec['id']}_")


def test_webhook_retry_rules():
    recs = records(4)
    plan = {recs[0]["id"]: 200, recs[1]["id"]: 409, recs[2]["id"]: 503, recs[3]["id"]: 200}

    def respond(req):
        rid = json.loads(req["body"])["data"]["id"]
        return plan[rid], {"Retry-After": "3"}, b"busy"

    with Receiver(respond) as rx:
        dest = open_destination(f"webhook://127.0.0.1:{rx.port}/h")
        result = dest.send(recs)
        # 200 and 409 delivered; 503 stops the batch (order kept), the rest waits for the retry
        assert result.delivered == [recs[0]["id"], recs[1]["id"]]
        assert result.retryable_error and result.retry_after == 3.0
        assert result.pending([r["id"] for r in recs]) == [recs[2]["id"], recs[3]["id"]]
        plan[recs[2]["id"]] = 422
        result = dest.send(recs[2:])
        assert list(result.rejected) == [recs[2]["id"]] and result.delivered == [recs[3]["id"]]
        plan[recs[3]["id"]] = 410
        result = dest.send(recs[3:])
        assert result.fatal_error and "410" in result.fatal_error


# --- OTLP ------------------------------------------------------------------------------------------


def test_otlp_request_shape_and_semantic_conventions():
    rec = rich_record(host="h9")
    req = otlp.export_request([rec, *records(2, host="h8")])
    assert [r["resource"]["attributes"][2] for r in req["resourceLogs"]] == [
        {"key": "host.name", "value": {"stringValue": "h9"}}, {"key": "host.name", "value": {"stringValue": "h8"}}]
    log = req["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    assert log["timeUnixNano"] == str(rfc3339_to_ns(rec["started_at"])) and log["eventName"] == "kubectl.command"
    assert log["severityNumber"] == 17 and log["severityText"] == "ERROR"
    attrs = {a["key"]: otlp.from_any_value(a["value"]) for a in log["attributes"]}
    assert attrs["log.record.uid"] == rec["id"]
    assert attrs["process.command_line"] == rec["command"]
    assert attrs["process.command_args"] == ["kubectl", *rec["argv"]]
    assert attrs["process.exit.code"] == 1 and attrs["k8s.cluster.name"] == "prod-eu-1"
    assert attrs["k8s.namespace.name"] == "prod" and attrs["user.name"] == "u" and attrs["enduser.id"] == rec["identity"]
    assert attrs["server.address"] == "dev.example" and attrs["server.port"] == 6443
    assert attrs["cicd.pipeline.name"] == "deploy/rollout" and attrs["vcs.ref.head.revision"] == "abc123"
    assert attrs["kubectl.audit.status"] == "strong"
    int_values = [a["value"]["intValue"] for a in log["attributes"] if "intValue" in a["value"]]
    assert all(isinstance(v, str) for v in int_values)  # int64 as decimal strings (proto3 JSON)
    # nothing is lost: the record comes back from its attributes
    back = otlp.record_from_attributes(attrs, {"host.name": "h9"})
    assert back == {k: v for k, v in rec.items() if v is not None}


def test_otlp_partial_success_is_never_retried():
    recs = records(3)
    answers = iter([
        (200, {}, {"partialSuccess": {"rejectedLogRecords": "1", "errorMessage": "line too long"}}),
        (200, {}, {"partialSuccess": {"rejectedLogRecords": 3, "errorMessage": "quota"}}),
        (200, {}, {"partialSuccess": {}}),
        (200, {}, b""),
    ])
    with Receiver(lambda req: next(answers)) as rx:
        dest = open_destination(f"otlp://127.0.0.1:{rx.port}")
        r1 = dest.send(recs)
        assert r1.ok and len(r1.delivered) == 3 and "rejected 1 of 3" in r1.warnings[0]
        r2 = dest.send(recs)
        assert r2.ok and set(r2.rejected) == {r["id"] for r in recs} and "quota" in next(iter(r2.rejected.values()))
        assert dest.send(recs).delivered and dest.send(recs).delivered
        assert len(rx.requests) == 4  # one request each: nothing re-sent


@pytest.mark.parametrize("status, outcome", [(429, "retry"), (502, "retry"), (503, "retry"), (504, "retry"),
                                             (500, "rejected"), (501, "rejected"), (400, "rejected"),
                                             (404, "fatal"), (413, "too_large")])
def test_otlp_retryable_codes_follow_the_specification(status, outcome):
    recs = records(1)
    with Receiver(lambda req: (status, {"Retry-After": "2"}, {"code": 3, "message": "no"})) as rx:
        result = open_destination(f"otlp://127.0.0.1:{rx.port}").send(recs)
    if outcome == "retry":
        assert result.retryable_error and result.retry_after == 2.0 and not result.rejected
    elif outcome == "rejected":
        assert set(result.rejected) == {recs[0]["id"]} and not result.retryable_error
    elif outcome == "fatal":
        assert result.fatal_error
    else:
        assert result.too_large


def test_otlp_400_is_narrowed_to_the_refused_record():
    recs = records(5)

    def respond(req):
        body = json.loads(req["body"])
        uids = [a["value"]["stringValue"] for rl in body["resourceLogs"] for sl in rl["scopeLogs"]
                for lr in sl["logRecords"] for a in lr["attributes"] if a["key"] == "log.record.uid"]
        return (400, {}, {"message": "bad record"}) if recs[3]["id"] in uids else (200, {}, {})

    with Receiver(respond) as rx:
        result = open_destination(f"otlp://127.0.0.1:{rx.port}").send(recs)
    assert list(result.rejected) == [recs[3]["id"]] and "bad record" in result.rejected[recs[3]["id"]]
    assert len(result.delivered) == 4


def test_loki_all_refused_needs_no_search():
    recs = records(6)
    respond, kept = _loki_like({r["id"] for r in recs})
    with Receiver(respond) as rx:
        result = open_destination(f"loki://127.0.0.1:{rx.port}").send(recs)
        assert set(result.rejected) == {r["id"] for r in recs} and len(rx.requests) == 1


def test_unknown_options_are_refused():
    with pytest.raises(DestinationError, match="unknown option"):
        open_destination("loki://127.0.0.1:3100", {"tennant": "x"})
    with pytest.raises(DestinationError, match="unknown option"):
        open_destination("otlp://127.0.0.1:4318", {"secret": "whsec_AAAA"})
    with pytest.raises(DestinationError, match="whsec_"):
        open_destination("webhook://127.0.0.1/h", {"secret": "not base64!"})
