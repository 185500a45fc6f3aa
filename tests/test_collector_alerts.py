"""`kubectl record serve --alerts RULES`: a real collector (SQLite and PostgreSQL) evaluates alert
rules on the records uploaded to it and delivers grouped alerts to a Slack-compatible webhook
(a real HTTP receiver on 127.0.0.1). Only records new to the collector count: a retried upload
does not alert again."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

from .collectorkit import Collector, child_env, db_url, issue  # noqa: F401
from .test_collector import chain, upload
from .test_destinations_kit import Receiver

RULES = """
group_wait: 200ms
group_max: 2s
group_by: [cluster]
notify:
  - slack: {url}/services/T/B/X
rules:
  - name: prod-delete
    severity: warning
    when: {{verb: delete, cluster: "prod-*"}}
"""


def _texts(rx: Receiver) -> list[str]:
    return [json.loads(r["body"])["text"] for r in rx.requests]


def _wait_for(rx: Receiver, count: int, timeout: float = 10.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(rx.requests) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return _texts(rx)


def test_new_records_alert_once(db_url, tmp_path):  # noqa: F811
    with Receiver() as rx:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(url=rx.url))
        c = Collector(db_url, args=("--alerts", str(rules))).start()
        try:
            token = issue(db_url, "alice")
            burst = chain(tmp_path, 3, "laptop", verb="delete", cluster="prod-eu")
            r = upload(c, token, burst)
            assert r.status_code == 200 and r.json()["accepted"] == 3, r.text
            assert set(r.json()) == {"accepted", "duplicates", "updated", "rejected", "tombstones_accepted",
                                     "tombstones_duplicate", "findings"}  # the answer is unchanged
            texts = _wait_for(rx, 1)
            assert len(texts) == 1, texts
            assert texts[0].startswith("*[warning] prod-delete: 3 commands (cluster=prod-eu)*")

            # The same upload again (a retry), to a fresh collector process (as another worker or
            # instance would get it: its rules engine has not seen these ids), and records no rule
            # matches: nothing to alert on.
            c.kill(signal.SIGTERM)
            c = Collector(db_url, args=("--alerts", str(rules))).start()
            r = upload(c, token, burst)
            assert r.status_code == 200 and r.json()["duplicates"] == 3, r.text
            quiet = chain(tmp_path, 2, "desktop", verb="delete", cluster="staging")
            quiet += chain(tmp_path, 2, "ci", verb="get", cluster="prod-us")
            assert upload(c, token, quiet).json()["accepted"] == 4
            # A marker in a group of its own, after them: once it is delivered, anything they had
            # fired would have been delivered before it.
            marker = chain(tmp_path, 1, "marker", verb="delete", cluster="prod-marker")
            assert upload(c, token, marker).json()["accepted"] == 1
            texts = _wait_for(rx, 2)
            assert len(texts) == 2 and texts[1].startswith("*[warning] prod-delete: 1 command (cluster=prod-marker)*"), \
                texts
        finally:
            c.kill(signal.SIGTERM)
        assert len(rx.requests) == 2


def test_open_groups_are_delivered_on_shutdown(db_url, tmp_path):  # noqa: F811
    with Receiver() as rx:
        rules = tmp_path / "rules.yaml"
        rules.write_text(RULES.format(url=rx.url).replace("200ms", "1h").replace("2s", "2h"))
        c = Collector(db_url, args=("--alerts", str(rules))).start()
        try:
            token = issue(db_url, "alice")
            r = upload(c, token, chain(tmp_path, 2, "laptop", verb="delete", cluster="prod-eu"))
            assert r.status_code == 200, r.text
            assert rx.requests == []  # the group stays open for an hour …
        finally:
            # … until the collector stops: uvicorn finishes the request (and its background
            # evaluation) first, then the shutdown delivers what is still open.
            c.kill(signal.SIGTERM)
        texts = _wait_for(rx, 1)
        assert len(texts) == 1 and texts[0].startswith("*[warning] prod-delete: 2 commands (cluster=prod-eu)*")


def test_bad_rules_file_is_one_line_and_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [{name: x}]")
    for path, why in ((bad, "needs `when`"), (tmp_path / "missing.yaml", "cannot read")):
        proc = subprocess.run([sys.executable, "-m", "kubectl_record", "serve", "--db", str(tmp_path / "c.db"),
                               "--listen", "127.0.0.1:1", "--alerts", str(path)],
                              env=child_env(), capture_output=True, text=True, timeout=30, check=False)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --alerts: "), proc.stderr
        assert str(path) in lines[0] and why in lines[0]
    assert not (tmp_path / "c.db").exists()  # refused before anything is opened


AUDIT_RULES = """
group_wait: 200ms
group_max: 2s
notify:
  - slack: {url}/services/T/B/X
rules:
  - name: unrecorded-kubectl
    on: audit
    severity: critical
    when: {{unmatched: true, user_agent: "kubectl*"}}
"""


def test_server_side_kubectl_activity_without_a_record_alerts(db_url, tmp_path):  # noqa: F811
    from .test_collector_audit import WEBHOOK, cluster_token, event, event_list

    with Receiver() as rx:
        rules = tmp_path / "rules.yaml"
        rules.write_text(AUDIT_RULES.format(url=rx.url))
        c = Collector(db_url, args=("--alerts", str(rules), "--audit-delay", "0.1", "--unmatched-after", "0.5")).start()
        try:
            token = cluster_token(db_url, "prod-eu", "https://prod-eu.example:6443")
            now = time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime())
            batch = event_list(event("a1", ts=now, verb="delete", requestURI="/api/v1/namespaces/default/pods/web",
                                     objectRef={"resource": "pods", "namespace": "default", "name": "web",
                                                "apiVersion": "v1"}),
                               event("c1", ts=now, ua="kube-controller-manager/v1.32.4"))
            for _ in range(2):  # delivered twice, as API servers do on retry: one alert still
                assert c.post(WEBHOOK, token, data=batch).status_code == 200
            texts = _wait_for(rx, 1)
            assert len(texts) == 1 and texts[0].startswith("*[critical] unrecorded-kubectl"), texts
            assert "delete pods web" in texts[0] and "kube-controller-manager" not in texts[0]
        finally:
            c.kill(signal.SIGTERM)
        assert len(rx.requests) == 1
