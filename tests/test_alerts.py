"""Alert rules: parsing, matching, grouping bursts, replay (`alerts test`), delivery to a
Slack-compatible webhook (a scripted receiver) and to a real Alertmanager (Debian's
prometheus-alertmanager on 127.0.0.1) that routes on to a webhook receiver."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import requests
from click.testing import CliRunner

from kubectl_record import alerts
from kubectl_record.alerts import AlertService, Alertmanager, RulesError, SlackWebhook, load_rules, replay

from .conftest import require
from .test_destinations_kit import Receiver, free_port, records, rich_record

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "audit-samples"
if not SAMPLES.is_dir():
    SAMPLES = Path(__file__).resolve().parents[1] / ".." / "shared" / "audit-samples"

RULES = """
group_wait: 30s
group_max: 5m
rules:
  - name: prod-mutation
    description: A mutating command in a production cluster
    severity: warning
    when: {verb: [patch, delete, edit, scale], cluster: "prod-*"}
  - name: failed-delete
    severity: info
    when: {verb: delete, failed: true}
    group_by: [cluster]
  - name: unrecorded-kubectl
    on: audit
    severity: critical
    when: {unmatched: true, user_agent: "kubectl*"}
    unless: {user: {glob: "system:node:*"}}
"""


def at(t0: float, *offsets, **fields) -> list[dict]:
    from .test_destinations_kit import stamp

    out = []
    for i, off in enumerate(offsets):
        rec = records(1, prefix=f"r{int(off * 1000)}x{i}")[0]
        rec.update({"started_at": stamp(t0 + off), **fields})
        out.append(rec)
    return out


# --- rules ----------------------------------------------------------------------------------------


def test_rules_parse():
    rs = load_rules(RULES)
    assert [r.name for r in rs.rules] == ["prod-mutation", "failed-delete", "unrecorded-kubectl"]
    assert rs.group_wait == 30 and rs.group_max == 300
    assert rs.rules[1].group_by == ("cluster",) and rs.rules[0].group_by == ("cluster", "user")
    assert rs.rules[2].on == "audit"


@pytest.mark.parametrize("text, message", [
    ("rules: []", "at least one rule"),
    ("rules: [{when: {verb: get}}]", "needs a name"),
    ("rules: [{name: a}]", "needs `when`"),
    ("rules: [{name: a, when: {verb: get}}, {name: a, when: {verb: get}}]", "duplicate"),
    ("rules: [{name: a, when: {verb: {like: get}}}]", "unknown operator"),
    ("rules: [{name: a, on: events, when: {verb: get}}]", "records or audit"),
    ("rules: [{name: a, when: {verb: {regex: '('}}}]", "bad regex"),
    ("group_wait: soon\nrules: [{name: a, when: {verb: get}}]", "not a duration"),
    ("rules: [{name: a, when: {verb: get}, colour: red}]", "unknown key"),
    ("rules: [{name: a\n", "not valid YAML"),
])
def test_bad_rules_say_what_is_wrong(text, message):
    with pytest.raises(RulesError, match=message):
        load_rules(text)


def test_conditions():
    rs = load_rules(RULES)
    prod, failed = rs.rules[0], rs.rules[1]
    view = alerts.record_view
    assert prod.matches(view(rich_record(verb="patch", cluster="prod-eu-1")))
    assert not prod.matches(view(rich_record(verb="get", cluster="prod-eu-1")))
    assert not prod.matches(view(rich_record(verb="patch", cluster="staging-1")))
    assert failed.matches(view(rich_record(verb="delete", exit_code=1)))
    assert not failed.matches(view(rich_record(verb="delete", exit_code=0)))
    assert not failed.matches(view(rich_record(verb="delete", exit_code=None)))  # unknown is not failed
    more = load_rules("""
rules:
  - {name: a, when: {audit.status: [missing, ambiguous], mutating: true}}
  - {name: b, when: {names: "api", duration_ms: {gt: 1000}}}
  - {name: c, when: {namespace: {not_in: [default, "kube-*"]}, identity: {exists: true}}}
  - {name: d, when: {command: {regex: "--as[= ]"}}}
""").rules
    rec = view(rich_record(audit={"status": "missing", "events": []}, duration_ms=1500))
    assert [r.name for r in more if r.matches(rec)] == ["a", "b", "c", "d"]
    rec = view(rich_record(namespace="kube-system", identity=None, duration_ms=5, command="kubectl get po"))
    assert [r.name for r in more if r.matches(rec)] == []


# --- grouping and replay --------------------------------------------------------------------------


def test_a_burst_is_one_alert_and_bursts_apart_are_two():
    t0 = 1_790_000_000.0
    burst = at(t0, 0, 2, 4, 9, 15, verb="patch", cluster="prod-eu-1", user="ops")
    later = at(t0, 400, 401, verb="delete", cluster="prod-eu-1", user="ops", exit_code=0)
    other = at(t0, 3, verb="scale", cluster="prod-us-1", user="ops")
    quiet = at(t0, 5, 6, verb="get", cluster="prod-eu-1", user="ops")
    fired = replay(load_rules(RULES), burst + later + other + quiet)
    assert [(a.rule, a.group["cluster"], a.count) for a in fired] == [
        ("prod-mutation", "prod-eu-1", 5), ("prod-mutation", "prod-us-1", 1), ("prod-mutation", "prod-eu-1", 2)]
    first = fired[0]
    assert first.ids == [r["id"] for r in burst] and first.samples == [r["command"] for r in burst]
    assert first.last - first.first == pytest.approx(15, abs=0.01)
    assert first.labels == {"alertname": "prod-mutation", "severity": "warning", "source": "kubectl-record",
                            "cluster": "prod-eu-1", "user": "ops"}
    # a steady trickle is cut at group_max
    trickle = at(t0, *range(0, 700, 20), verb="edit", cluster="prod-x", user="u")
    assert [a.count for a in replay(load_rules(RULES), trickle)] == [16, 16, 3]


def test_a_record_uploaded_again_fires_once_and_late_outcomes_count():
    svc = AlertService(load_rules(RULES), targets=[], clock=lambda: 1000.0)
    rec = rich_record(verb="delete", cluster="staging", exit_code=None)
    svc.records_arrived([rec])  # running: not failed yet
    svc.records_arrived([dict(rec, exit_code=1)])  # the late end arrives: now it is
    svc.records_arrived([dict(rec, exit_code=1, audit={"status": "exact", "events": []})])
    svc.clock = lambda: 2000.0
    fired = svc.tick()
    assert [(a.rule, a.count) for a in fired] == [("failed-delete", 1)]


def test_unmatched_audit_activity_from_real_samples():
    events = [json.loads(line) for line in (SAMPLES / "elastic-integrations_test-audit.log").read_text().splitlines()
              if line.strip()]
    kubectl_events = [e for e in events if e.get("userAgent", "").startswith("kubectl")]
    assert kubectl_events
    fired = replay(load_rules(RULES), [], events)
    assert [(a.rule, a.count) for a in fired] == [("unrecorded-kubectl", len(kubectl_events))]
    assert fired[0].labels["user"] == kubectl_events[0]["user"]["username"]
    # a record that lists the event's audit id matches it: nothing fires
    rec = rich_record(audit={"status": "exact", "events": [{"audit_id": e["auditID"]} for e in kubectl_events]})
    assert [a.rule for a in replay(load_rules(RULES), [dict(rec, verb="get")], events)] == []


def test_alerts_test_command_replays_the_local_store(tmp_path, monkeypatch):
    from kubectl_record import store

    monkeypatch.setenv("KUBECTL_RECORD_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("KUBECTL_RECORD_RUNTIME_DIR", str(tmp_path / "spool"))
    t0 = time.time() - 3600
    conn = store.connect()
    store.insert_local(conn, at(t0, 0, 1, 2, verb="patch", cluster="prod-a", user="u")
                       + at(t0, 10, verb="get", cluster="prod-a", user="u"))
    conn.close()
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    result = CliRunner().invoke(alerts.alerts, ["test", str(rules)])
    assert result.exit_code == 0, result.output
    assert "[warning] prod-mutation: 3 commands (cluster=prod-a, user=u)" in result.output
    result = CliRunner().invoke(alerts.alerts, ["test", str(rules), "-o", "json"])
    (line,) = result.stdout.strip().splitlines()
    assert json.loads(line)["count"] == 3
    exported = tmp_path / "export.jsonl"
    exported.write_text("\n".join(json.dumps(r) for r in at(t0, 0, verb="delete", cluster="prod-b", user="v",
                                                             exit_code=1)))
    result = CliRunner().invoke(alerts.alerts, ["test", str(rules), "--records", str(exported), "-o", "json"])
    assert sorted(json.loads(x)["rule"] for x in result.stdout.splitlines()) == ["failed-delete", "prod-mutation"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{name: x}]")
    result = CliRunner().invoke(alerts.alerts, ["test", str(bad)])
    assert result.exit_code == 2 and "needs `when`" in result.output
    assert CliRunner().invoke(alerts.alerts, ["check", str(rules)]).exit_code == 0


# --- delivery: Slack-compatible webhook -----------------------------------------------------------


def test_slack_compatible_body_and_retry_rules():
    answers = iter([(429, {"Retry-After": "0"}, b"rate_limited"), (503, {}, b""), (200, {}, b"ok")])
    with Receiver(lambda req: next(answers)) as rx:
        fired = replay(load_rules(RULES), at(1_790_000_000.0, 0, 1, verb="delete", cluster="prod-z", user="w"))
        SlackWebhook(rx.url + "/services/T/B/X", sleep=lambda s: None).send(fired[:1])
        assert len(rx.requests) == 3  # 429 and 503 retried, then delivered
        body = json.loads(rx.requests[-1]["body"])
    assert body["text"].startswith("*[warning] prod-mutation: 2 commands (cluster=prod-z, user=w)*")
    assert "`kubectl get pods web-0 -n default`" in body["text"]
    assert body["blocks"][0]["type"] == "section" and body["blocks"][0]["text"]["type"] == "mrkdwn"
    with Receiver(lambda req: (400, {}, b"invalid_payload")) as rx:
        with pytest.raises(alerts.DeliveryFailed, match="400"):
            SlackWebhook(rx.url, sleep=lambda s: None).send(fired[:1])
        assert len(rx.requests) == 1  # not retried


# --- delivery: a real Alertmanager ----------------------------------------------------------------


def _alertmanager_binary():
    return shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")


@pytest.fixture
def alertmanager(tmp_path):
    binary = _alertmanager_binary()
    require("prometheus-alertmanager (Debian package)", binary is not None, "the real Alertmanager v2 API")
    with Receiver(lambda req: (200, {}, b"")) as hook:
        port = free_port()
        config = tmp_path / "am.yml"
        config.write_text(f"""
route:
  receiver: hook
  group_by: [alertname, cluster]
  group_wait: 100ms
  group_interval: 1s
  repeat_interval: 1h
receivers:
- name: hook
  webhook_configs:
  - url: {hook.url}/am
    send_resolved: false
""")
        proc = subprocess.Popen([binary, f"--config.file={config}", f"--storage.path={tmp_path / 'am-data'}",
                                 f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address=",
                                 "--log.level=warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 20
            while True:
                if proc.poll() is not None:
                    raise AssertionError(f"alertmanager exited: {proc.stderr.read()[-1000:]}")
                try:
                    if requests.get(url + "/-/ready", timeout=1).status_code == 200:
                        break
                except requests.RequestException:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError("alertmanager not ready")
                time.sleep(0.05)
            yield url, hook
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_alertmanager_v2_receives_one_grouped_alert(alertmanager):
    url, hook = alertmanager
    now = [1000.0]
    rules = load_rules(RULES + f"notify:\n  - alertmanager: {url}\n    resolve_after: 10m\n")
    svc = AlertService(rules, clock=lambda: now[0])
    assert [t.kind for t in svc.targets] == ["alertmanager"]
    burst = records(6, verb="delete", cluster="prod-eu-1", user="ops", exit_code=0)
    svc.records_arrived(burst[:3])
    now[0] += 5
    svc.records_arrived(burst[3:])
    assert svc.tick() == []  # still inside group_wait
    now[0] += 31
    fired = svc.tick()
    assert [(a.rule, a.count) for a in fired] == [("prod-mutation", 6)] and not svc.errors
    got = requests.get(url + "/api/v2/alerts", timeout=5).json()
    assert len(got) == 1
    alert = got[0]
    assert alert["labels"] == {"alertname": "prod-mutation", "severity": "warning", "source": "kubectl-record",
                               "cluster": "prod-eu-1", "user": "ops"}
    assert alert["annotations"]["count"] == "6"
    assert alert["annotations"]["summary"] == "[warning] prod-mutation: 6 commands (cluster=prod-eu-1, user=ops)"
    assert alert["annotations"]["record_ids"].split(",") == [r["id"] for r in burst]
    assert alert["status"]["state"] == "active" and alert["receivers"] == [{"name": "hook"}]
    # Alertmanager routes it on (its own webhook payload), as one notification
    deadline = time.monotonic() + 10
    while not hook.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    assert hook.requests, "alertmanager did not notify its receiver"
    notified = json.loads(hook.requests[0]["body"])
    assert notified["status"] == "firing" and len(notified["alerts"]) == 1
    assert notified["alerts"][0]["labels"]["alertname"] == "prod-mutation"


def test_alertmanager_refusal_is_not_retried(alertmanager):
    url, _ = alertmanager
    target = Alertmanager(url, sleep=lambda s: None)
    fired = replay(load_rules(RULES), at(1_790_000_000.0, 0, verb="patch", cluster="prod-q", user="z"))
    fired[0].labels = {}  # Alertmanager refuses an alert without labels (400)
    with pytest.raises(alerts.DeliveryFailed, match="400"):
        target.send(fired)
    unreachable = Alertmanager(f"http://127.0.0.1:{free_port()}", attempts=2, sleep=lambda s: None)
    with pytest.raises(alerts.DeliveryFailed, match="unreachable"):
        unreachable.send(fired)
