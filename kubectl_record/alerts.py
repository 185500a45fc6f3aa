"""Alerts on what matters: rules in YAML, evaluated on records (and audit events) as they arrive
at the collector, bursts grouped into one alert, delivered to a Slack-compatible webhook and to
Alertmanager's v2 API. `kubectl record alerts test RULES` replays past records through the rules.

A rules file:

    group_wait: 30s            # a group closes after this long without a new match …
    group_max: 5m              # … or this long after its first match
    group_by: [cluster, user]  # what splits one rule's matches into groups (default)
    notify:
      - slack: https://hooks.slack.com/services/T000/B000/XXXX
      - alertmanager: http://127.0.0.1:9093
        resolve_after: 15m
    rules:
      - name: prod-mutation
        description: A mutating command in a production cluster
        severity: warning
        when: {verb: [patch, delete, edit, scale], cluster: "prod-*"}
      - name: failed-delete
        when: {verb: delete, failed: true}
      - name: unrecorded-kubectl
        on: audit              # audit events; `unmatched: true` = no local record has them
        when: {unmatched: true, user_agent: "kubectl*"}
        severity: critical

Conditions (`when`, and `unless` to exclude): every key must hold. A key is a record field
(dotted for nested ones: `audit.status`, `ci.system`) or a derived one (`failed`: exit status
neither 0 nor unknown). A value is a literal (a string with * ? [ ] is a glob), a list (any of),
or a mapping of operators: in, not_in, not, glob, regex, exists, gt, ge, lt, le.
Audit events expose: audit_id, cluster, user, groups, verb, resource, subresource, namespace,
name, user_agent, code, stage, source_ip, impersonated_user, unmatched, time.
"""

from __future__ import annotations

import datetime as _dt
import fnmatch
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

import click

DEFAULT_GROUP_BY = ("cluster", "user")
DEFAULT_WAIT = 30.0
DEFAULT_MAX = 300.0
SAMPLES = 5
_OPS = {"in", "not_in", "not", "glob", "regex", "exists", "gt", "ge", "lt", "le", "eq"}


class RulesError(Exception):
    """The rules file is unusable; the message says where, in one line."""


# --- parsing -------------------------------------------------------------------------------------


def parse_duration(value, what: str = "duration") -> float:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    text = str(value).strip().lower()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?", text)
    if not m:
        raise RulesError(f"{what}: not a duration: {value!r} (e.g. 30s, 5m, 1h)")
    number, unit = float(m.group(1)), m.group(2) or "s"
    return number * {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[unit]


@dataclass
class Condition:
    path: tuple[str, ...]
    test: object  # the YAML value

    def holds(self, item: dict) -> bool:
        return _matches(_lookup(item, self.path), self.test)


def _lookup(item: dict, path: tuple[str, ...]):
    value = item
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _scalar_eq(value, expected) -> bool:
    if isinstance(value, list):  # a list field (names, groups…) matches if any element does
        return any(_scalar_eq(v, expected) for v in value)
    if isinstance(expected, bool):
        return value is expected or (isinstance(value, int) and not isinstance(value, bool) and value == int(expected))
    if isinstance(value, bool):
        return str(expected).lower() == ("true" if value else "false")
    if expected is None:
        return value is None
    if isinstance(expected, str):
        if value is None:
            return False
        text = str(value)
        return fnmatch.fnmatchcase(text, expected) if _is_glob(expected) else text == expected
    if isinstance(expected, (int, float)):
        try:
            return value is not None and float(value) == float(expected)
        except (TypeError, ValueError):
            return False
    return value == expected


def _compare(value, op: str, bound) -> bool:
    try:
        a, b = float(value), float(bound)
    except (TypeError, ValueError):
        if value is None:
            return False
        a, b = str(value), str(bound)
    return {"gt": a > b, "ge": a >= b, "lt": a < b, "le": a <= b}[op]


def _matches(value, test) -> bool:
    if isinstance(test, list):
        return any(_matches(value, t) for t in test)
    if isinstance(test, dict):
        for op, arg in test.items():
            if op in ("in", "eq"):
                ok = _matches(value, arg)
            elif op in ("not_in", "not"):
                ok = not _matches(value, arg)
            elif op == "glob":
                ok = value is not None and any(fnmatch.fnmatchcase(str(v), str(g)) for v in _as_list(value)
                                               for g in _as_list(arg))
            elif op == "regex":
                ok = value is not None and any(re.search(str(arg), str(v)) for v in _as_list(value))
            elif op == "exists":
                ok = (value is not None and value != []) is bool(arg)
            else:
                ok = _compare(value, op, arg)
            if not ok:
                return False
        return True
    return _scalar_eq(value, test)


def _as_list(value) -> list:
    return value if isinstance(value, list) else [value]


def _conditions(spec, where: str) -> list[Condition]:
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise RulesError(f"{where}: expected a mapping of field: condition")
    out = []
    for key, test in spec.items():
        if isinstance(test, dict):
            unknown = set(test) - _OPS
            if unknown:
                raise RulesError(f"{where}.{key}: unknown operator(s) {', '.join(sorted(map(str, unknown)))} "
                                 f"(use {', '.join(sorted(_OPS))})")
            if "regex" in test:
                try:
                    re.compile(str(test["regex"]))
                except re.error as exc:
                    raise RulesError(f"{where}.{key}: bad regex: {exc}") from None
        out.append(Condition(tuple(str(key).split(".")), test))
    return out


@dataclass
class Rule:
    name: str
    on: str = "records"  # records | audit
    when: list[Condition] = field(default_factory=list)
    unless: list[Condition] = field(default_factory=list)
    severity: str = "warning"
    description: str = ""
    group_by: tuple[str, ...] = DEFAULT_GROUP_BY
    labels: dict = field(default_factory=dict)

    def matches(self, item: dict) -> bool:
        return all(c.holds(item) for c in self.when) and not any(c.holds(item) for c in self.unless)


@dataclass
class RuleSet:
    rules: list[Rule]
    group_wait: float = DEFAULT_WAIT
    group_max: float = DEFAULT_MAX
    notify: list[dict] = field(default_factory=list)


def load_rules(text: str, source: str = "rules") -> RuleSet:
    import yaml

    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise RulesError(f"{source}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None
    if isinstance(doc, list):
        doc = {"rules": doc}
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list) or not doc["rules"]:
        raise RulesError(f"{source}: expected `rules:` with at least one rule")
    known = {"rules", "group_wait", "group_max", "group_by", "notify"}
    unknown = set(doc) - known
    if unknown:
        raise RulesError(f"{source}: unknown key(s): {', '.join(sorted(map(str, unknown)))}")
    group_by = tuple(doc.get("group_by") or DEFAULT_GROUP_BY)
    rules, names = [], set()
    for i, spec in enumerate(doc["rules"]):
        where = f"{source}: rules[{i}]"
        if not isinstance(spec, dict) or not spec.get("name"):
            raise RulesError(f"{where}: each rule needs a name")
        if True in spec:  # YAML 1.1 reads a bare `on:` key as the boolean true
            spec = {("on" if k is True else k): v for k, v in spec.items()}
        name = str(spec["name"])
        where = f"{source}: rule {name}"
        if name in names:
            raise RulesError(f"{where}: duplicate name")
        names.add(name)
        unknown = set(spec) - {"name", "on", "when", "unless", "severity", "description", "group_by", "labels"}
        if unknown:
            raise RulesError(f"{where}: unknown key(s): {', '.join(sorted(map(str, unknown)))}")
        on = str(spec.get("on", "records"))
        if on in ("record",):
            on = "records"
        if on not in ("records", "audit"):
            raise RulesError(f"{where}: `on` is records or audit, not {on!r}")
        if not spec.get("when"):
            raise RulesError(f"{where}: needs `when` (a rule without conditions would fire on everything)")
        labels = spec.get("labels") or {}
        if not isinstance(labels, dict):
            raise RulesError(f"{where}: labels must be a mapping")
        rules.append(Rule(name=name, on=on, when=_conditions(spec.get("when"), f"{where}.when"),
                          unless=_conditions(spec.get("unless"), f"{where}.unless"),
                          severity=str(spec.get("severity", "warning")), description=str(spec.get("description", "")),
                          group_by=tuple(spec.get("group_by") or group_by),
                          labels={str(k): str(v) for k, v in labels.items()}))
    notify = doc.get("notify") or []
    if not isinstance(notify, list):
        raise RulesError(f"{source}: notify must be a list")
    for n in notify:
        if not isinstance(n, dict) or not ({"slack", "webhook", "alertmanager"} & set(n)):
            raise RulesError(f"{source}: each notify entry names slack:, webhook: or alertmanager: URL")
    return RuleSet(rules=rules, group_wait=parse_duration(doc.get("group_wait", DEFAULT_WAIT), "group_wait"),
                   group_max=parse_duration(doc.get("group_max", DEFAULT_MAX), "group_max"), notify=notify)


def load_rules_file(path: str) -> RuleSet:
    try:
        with open(path, encoding="utf-8") as f:
            return load_rules(f.read(), path)
    except OSError as exc:
        raise RulesError(f"cannot read {path}: {exc.strerror}") from None


# --- what rules see ------------------------------------------------------------------------------


def record_view(record: dict) -> dict:
    view = dict(record)
    code = record.get("exit_code")
    view["failed"] = code is not None and code != 0
    view["time"] = record.get("started_at")
    return view


def audit_view(event: dict, unmatched: bool | None = None) -> dict:
    """An audit.k8s.io Event (or an already flat dict) as rules see it."""
    obj = event.get("objectRef") or {}
    user = event.get("user") or {}
    imp = event.get("impersonatedUser") or {}
    status = event.get("responseStatus") or {}
    view = {
        "audit_id": event.get("auditID", event.get("audit_id")),
        "cluster": event.get("cluster"),
        "user": user.get("username") if isinstance(user, dict) else user,
        "groups": user.get("groups") if isinstance(user, dict) else event.get("groups"),
        "verb": event.get("verb"),
        "resource": obj.get("resource", event.get("resource")),
        "subresource": obj.get("subresource", event.get("subresource")),
        "namespace": obj.get("namespace", event.get("namespace")),
        "name": obj.get("name", event.get("name")),
        "user_agent": event.get("userAgent", event.get("user_agent")),
        "code": status.get("code", event.get("code")),
        "stage": event.get("stage"),
        "source_ip": (event.get("sourceIPs") or [None])[0],
        "impersonated_user": imp.get("username") if isinstance(imp, dict) else None,
        "time": event.get("requestReceivedTimestamp") or event.get("stageTimestamp") or event.get("time"),
    }
    view["command"] = f"{view['verb']} {view['resource'] or event.get('requestURI') or ''} {view['name'] or ''}".strip()
    flag = event.get("unmatched") if unmatched is None else unmatched
    view["unmatched"] = bool(flag) if flag is not None else None
    return view


def _ts(text) -> float | None:
    if not text:
        return None
    try:
        return _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _iso(t: float) -> str:
    return _dt.datetime.fromtimestamp(t, _dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- grouping --------------------------------------------------------------------------------------


@dataclass
class Alert:
    rule: str
    severity: str
    group: dict          # group_by field -> value
    labels: dict
    first: float
    last: float
    count: int = 0
    ids: list = field(default_factory=list)
    samples: list = field(default_factory=list)
    description: str = ""
    on: str = "records"

    @property
    def summary(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.group.items() if v is not None)
        what = "audit event" if self.on == "audit" else "command"
        return f"[{self.severity}] {self.rule}: {self.count} {what}{'s' if self.count != 1 else ''}" + \
            (f" ({where})" if where else "")

    def as_dict(self) -> dict:
        return {"rule": self.rule, "severity": self.severity, "group": self.group, "count": self.count,
                "first": _iso(self.first), "last": _iso(self.last), "ids": self.ids, "samples": self.samples,
                "summary": self.summary, "description": self.description}


class Grouper:
    """Matches of one rule with equal group_by values within group_wait of each other (and
    within group_max of the first) become one alert."""

    def __init__(self, wait: float, maximum: float):
        self.wait = wait
        self.maximum = maximum
        self.open: "OrderedDict[tuple, Alert]" = OrderedDict()

    def add(self, rule: Rule, item: dict, t: float) -> list[Alert]:
        """Add a match at time T; returns groups this closes (the same key, too late to join)."""
        group = {k: _lookup(item, tuple(k.split("."))) for k in rule.group_by}
        key = (rule.name, tuple((k, json.dumps(v, sort_keys=True, default=str)) for k, v in group.items()))
        closed = []
        alert = self.open.get(key)
        if alert is not None and (t - alert.last > self.wait or t - alert.first > self.maximum):
            closed.append(self.open.pop(key))
            alert = None
        if alert is None:
            labels = {"alertname": rule.name, "severity": rule.severity, "source": "kubectl-record", **rule.labels}
            labels.update({k.replace(".", "_"): str(v) for k, v in group.items() if v not in (None, "", [])})
            alert = Alert(rule=rule.name, severity=rule.severity, group=group, labels=labels, first=t, last=t,
                          description=rule.description, on=rule.on)
            self.open[key] = alert
        alert.count += 1
        alert.last = max(alert.last, t)
        rid = item.get("id") or item.get("audit_id")
        if rid is not None and len(alert.ids) < 100:
            alert.ids.append(rid)
        if len(alert.samples) < SAMPLES:
            alert.samples.append(item.get("command") or "")
        return closed

    def due(self, now: float) -> list[Alert]:
        out = []
        for key in list(self.open):
            alert = self.open[key]
            if now - alert.last >= self.wait or now - alert.first >= self.maximum:
                out.append(self.open.pop(key))
        return out

    def flush(self) -> list[Alert]:
        out = list(self.open.values())
        self.open.clear()
        return out


# --- the engine ------------------------------------------------------------------------------------


class Engine:
    """Evaluates rules on items and groups the matches; remembers (rule, id) so a record
    uploaded again (its outcome completed later) fires a rule once."""

    def __init__(self, ruleset: RuleSet, seen_limit: int = 200_000):
        self.ruleset = ruleset
        self.grouper = Grouper(ruleset.group_wait, ruleset.group_max)
        self._seen: "OrderedDict[tuple, None]" = OrderedDict()
        self._seen_limit = seen_limit
        self.lock = threading.Lock()

    def _once(self, rule: Rule, item: dict) -> bool:
        rid = item.get("id") or item.get("audit_id")
        if rid is None:
            return True
        key = (rule.name, rid)
        if key in self._seen:
            return False
        self._seen[key] = None
        if len(self._seen) > self._seen_limit:
            self._seen.popitem(last=False)
        return True

    def evaluate(self, item: dict, kind: str, t: float) -> list[Alert]:
        closed = []
        with self.lock:
            for rule in self.ruleset.rules:
                if rule.on == kind and rule.matches(item) and self._once(rule, item):
                    closed.extend(self.grouper.add(rule, item, t))
        return closed

    def record(self, record: dict, t: float | None = None) -> list[Alert]:
        view = record_view(record)
        return self.evaluate(view, "records", t if t is not None else (_ts(view["time"]) or time.time()))

    def audit(self, event: dict, t: float | None = None, unmatched: bool | None = None) -> list[Alert]:
        view = audit_view(event, unmatched)
        if view["stage"] not in (None, "ResponseComplete", "Panic"):
            return []  # one request, several stages: judge it once
        return self.evaluate(view, "audit", t if t is not None else (_ts(view["time"]) or time.time()))

    def due(self, now: float) -> list[Alert]:
        with self.lock:
            return self.grouper.due(now)

    def flush(self) -> list[Alert]:
        with self.lock:
            return self.grouper.flush()


def replay(ruleset: RuleSet, records: Iterable[dict], audit_events: Iterable[dict] = ()) -> list[Alert]:
    """What the rules would have fired on past records (and audit events), grouped on their own
    times. An audit event without an `unmatched` flag counts as unmatched when no record
    lists its audit id."""
    items = []
    known_audit_ids = set()
    for record in records:
        for ev in ((record.get("audit") or {}).get("events") or []):
            if ev.get("audit_id"):
                known_audit_ids.add(ev["audit_id"])
        items.append(("records", record, _ts(record.get("started_at")) or 0.0))
    for event in audit_events:
        view = audit_view(event)
        if view["unmatched"] is None:
            event = {**event, "unmatched": view["audit_id"] not in known_audit_ids}
        items.append(("audit", event, _ts(view["time"]) or 0.0))
    items.sort(key=lambda x: x[2])
    engine = Engine(ruleset)
    alerts = []
    for kind, item, t in items:
        alerts.extend(engine.record(item, t) if kind == "records" else engine.audit(item, t))
    alerts.extend(engine.flush())
    alerts.sort(key=lambda a: (a.first, a.rule))
    return alerts


# --- delivery --------------------------------------------------------------------------------------


class DeliveryFailed(Exception):
    pass


def slack_body(alert: Alert) -> dict:
    """A Slack incoming-webhook body (also what Mattermost, Rocket.Chat, Teams' Slack-compatible
    endpoints and Discord's /slack endpoint accept): `text`, with blocks for Slack itself."""
    lines = [f"*{alert.summary}*"]
    if alert.description:
        lines.append(alert.description)
    lines.append(f"{_iso(alert.first)} … {_iso(alert.last)}")
    lines += [f"`{s}`" for s in alert.samples if s]
    if alert.count > len(alert.samples):
        lines.append(f"… and {alert.count - len(alert.samples)} more")
    text = "\n".join(lines)
    return {"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text[:2900]}}]}


def alertmanager_alert(alert: Alert, resolve_after: float = 900.0, generator_url: str | None = None,
                       now: float | None = None) -> dict:
    """One postableAlert for POST /api/v2/alerts. Label values are strings; the alert ends
    (resolves) RESOLVE_AFTER seconds after the burst's last match unless posted again."""
    now = time.time() if now is None else now
    body = {
        "labels": {k: str(v) for k, v in alert.labels.items()},
        "annotations": {
            "summary": alert.summary,
            "description": (alert.description + "\n" if alert.description else "") + "\n".join(alert.samples),
            "count": str(alert.count),
            "first": _iso(alert.first), "last": _iso(alert.last),
            "record_ids": ",".join(map(str, alert.ids[:20])),
        },
        "startsAt": _iso(min(alert.first, now)),
        "endsAt": _iso(max(alert.last, now) + resolve_after),
    }
    if generator_url:
        body["generatorURL"] = generator_url
    return body


class Notifier:
    """POSTs JSON with the usual retry rules: 429 and 5xx and connection errors are retried
    (not before Retry-After, capped), other 4xx are not. ATTEMPTS tries at most."""

    kind = ""

    def __init__(self, url: str, options: dict | None = None, attempts: int = 4, base_delay: float = 0.5,
                 sleep=time.sleep):
        import requests

        from .destinations.url import mask_url

        self.url = url
        self.name = mask_url(url)
        self.options = options or {}
        self.attempts = attempts
        self.base_delay = base_delay
        self.sleep = sleep
        self.session = requests.Session()
        self.session.headers["User-Agent"] = "kubectl-record"
        if self.options.get("ca_bundle"):
            self.session.verify = str(self.options["ca_bundle"])
        if self.options.get("insecure"):
            self.session.verify = False
        if self.options.get("bearer_token"):
            self.session.headers["Authorization"] = f"Bearer {self.options['bearer_token']}"
        for k, v in (self.options.get("headers") or {}).items():
            self.session.headers[str(k)] = str(v)

    def post(self, url: str, payload) -> None:
        import requests

        from .destinations.base import parse_retry_after, short

        last = ""
        for attempt in range(1, self.attempts + 1):
            retry_after = None
            try:
                r = self.session.post(url, json=payload, timeout=(5, 30), allow_redirects=False)
            except requests.exceptions.RequestException as exc:
                last = f"{self.name} unreachable: {short(exc, 200)}"
            else:
                if 200 <= r.status_code < 300:
                    return
                last = f"{self.name} answered {r.status_code}: {short(r.text, 200)}"
                if not (r.status_code == 429 or r.status_code >= 500):
                    raise DeliveryFailed(last)
                retry_after = parse_retry_after(r.headers.get("Retry-After"))
            if attempt < self.attempts:
                delay = self.base_delay * 2 ** (attempt - 1)
                self.sleep(min(max(delay, retry_after or 0), 60.0))
        raise DeliveryFailed(last)

    def send(self, alerts: list[Alert]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class SlackWebhook(Notifier):
    kind = "slack"

    def send(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self.post(self.url, slack_body(alert))


class Alertmanager(Notifier):
    kind = "alertmanager"

    def send(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        resolve_after = parse_duration(self.options.get("resolve_after", 900), "resolve_after")
        url = self.url.rstrip("/") + "/api/v2/alerts"
        self.post(url, [alertmanager_alert(a, resolve_after, self.options.get("generator_url")) for a in alerts])


def notifiers(ruleset: RuleSet, **kwargs) -> list[Notifier]:
    out = []
    for entry in ruleset.notify:
        options = {k: v for k, v in entry.items() if k not in ("slack", "webhook", "alertmanager")}
        if entry.get("alertmanager"):
            out.append(Alertmanager(str(entry["alertmanager"]), options, **kwargs))
        else:
            out.append(SlackWebhook(str(entry.get("slack") or entry.get("webhook")), options, **kwargs))
    return out


def deliver(alerts: list[Alert], targets: list[Notifier]) -> list[str]:
    """Send ALERTS to every target; returns one line per failure (a failed target does not stop the others)."""
    errors = []
    for target in targets:
        try:
            target.send(alerts)
        except DeliveryFailed as exc:
            errors.append(str(exc))
    return errors


class AlertService:
    """What the collector runs: records and audit events go in as they arrive (after they are
    stored), groups close on a timer, closed groups go to the notifiers from a worker thread.

        service = AlertService.from_file("rules.yaml"); service.start()
        service.records_arrived(records)      # after each upload is committed
        service.audit_arrived(events, unmatched=...)
    """

    def __init__(self, ruleset: RuleSet, targets: list[Notifier] | None = None, clock=time.time,
                 on_error=None):
        self.engine = Engine(ruleset)
        self.targets = notifiers(ruleset) if targets is None else targets
        self.clock = clock
        self.on_error = on_error or (lambda line: None)
        self.sent: list[Alert] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_file(cls, path: str, **kwargs) -> "AlertService":
        return cls(load_rules_file(path), **kwargs)

    def records_arrived(self, records: Iterable[dict]) -> None:
        now = self.clock()
        for record in records:
            self._send(self.engine.record(record, now))

    def audit_arrived(self, events: Iterable[dict], unmatched: bool | None = None) -> None:
        now = self.clock()
        for event in events:
            self._send(self.engine.audit(event, now, unmatched))

    def tick(self) -> list[Alert]:
        alerts = self.engine.due(self.clock())
        self._send(alerts)
        return alerts

    def _send(self, alerts: list[Alert]) -> None:
        if not alerts:
            return
        self.sent.extend(alerts)
        for line in deliver(alerts, self.targets):
            self.errors.append(line)
            self.on_error(line)

    def start(self, interval: float = 1.0) -> None:
        def loop():
            while not self._stop.wait(interval):
                self.tick()

        self._thread = threading.Thread(target=loop, name="kubectl-record-alerts", daemon=True)
        self._thread.start()

    def stop(self, flush: bool = True) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=10)
        if flush:
            self._send(self.engine.flush())


# --- command line ----------------------------------------------------------------------------------


class _BadInput(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _load(path: str) -> RuleSet:
    try:
        return load_rules_file(path)
    except RulesError as exc:
        raise _BadInput(str(exc)) from None


def _read_jsonl(path: str) -> Iterable[dict]:
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            try:
                item = json.loads(line)
            except ValueError:
                raise _BadInput(f"{path}:{number}: not JSON") from None
            if isinstance(item, dict) and item.get("kind") == "EventList":
                yield from item.get("items") or []
            elif isinstance(item, dict):
                yield item


@click.group("alerts")
def alerts() -> None:
    """Alert rules: check them, and see what they would have fired on past records."""


@alerts.command("check")
@click.argument("rules", type=click.Path(dir_okay=False))
def alerts_check(rules: str) -> None:
    """Validate RULES (exit 2 with the problem if it is not usable)."""
    ruleset = _load(rules)
    for rule in ruleset.rules:
        click.echo(f"{rule.name}: on {rule.on}, severity {rule.severity}, grouped by {', '.join(rule.group_by)}")
    click.echo(f"{len(ruleset.rules)} rule(s); group_wait {ruleset.group_wait:g}s, group_max {ruleset.group_max:g}s; "
               f"{len(ruleset.notify)} notification target(s)")


@alerts.command("test")
@click.argument("rules", type=click.Path(dir_okay=False))
@click.option("--records", "records_file", type=click.Path(dir_okay=False),
              help="Replay these JSONL records (`kubectl record export`) instead of the local store.")
@click.option("--audit", "audit_files", multiple=True, type=click.Path(dir_okay=False),
              help="Audit events (JSONL, as the API server's log backend writes) for `on: audit` rules.")
@click.option("--since", help="Only records started after this (e.g. 7d, 12h, or an RFC 3339 time).")
@click.option("-o", "--output", "fmt", type=click.Choice(["text", "json"]), default="text")
@click.option("--send", is_flag=True, help="Also deliver the alerts to the rules' notify targets.")
def alerts_test(rules: str, records_file: str | None, audit_files: tuple[str, ...], since: str | None, fmt: str,
                send: bool) -> None:
    """Show what RULES would have fired on past records (grouped as they would have been)."""
    ruleset = _load(rules)
    since_ts = None
    if since:
        since_ts = _ts(since)
        if since_ts is None:
            try:
                since_ts = time.time() - parse_duration(since, "--since")
            except RulesError as exc:
                raise _BadInput(str(exc)) from None
    if records_file:
        source = _read_jsonl(records_file)
    else:
        from .cli import open_store
        from .store import FIELDS, from_row

        conn = open_store()
        where, params = "", ()
        if since_ts is not None:
            where, params = " WHERE started_at >= ?", (_iso(since_ts),)
        source = (from_row(row) for row in conn.execute(
            f"SELECT {', '.join(FIELDS)} FROM records{where} ORDER BY started_at", params))
    recs = [r for r in source if since_ts is None or (_ts(r.get("started_at")) or 0) >= since_ts]
    events = [e for path in audit_files for e in _read_jsonl(path)]
    fired = replay(ruleset, recs, events)
    if fmt == "json":
        for alert in fired:
            click.echo(json.dumps(alert.as_dict(), ensure_ascii=False))
    else:
        for alert in fired:
            click.echo(f"{alert.summary}  {_iso(alert.first)} … {_iso(alert.last)}")
            for sample in alert.samples:
                click.echo(f"    {sample}")
        counts = {}
        for alert in fired:
            counts[alert.rule] = counts.get(alert.rule, 0) + 1
        click.echo(f"{len(fired)} alert(s) from {len(recs)} record(s)"
                   + (f" and {len(events)} audit event(s)" if events else "")
                   + ("".join(f"; {name}: {n}" for name, n in counts.items())), err=True)
    if send and fired:
        errors = deliver(fired, notifiers(ruleset))
        if errors:
            from .cli import Failure

            raise Failure(errors[0])
