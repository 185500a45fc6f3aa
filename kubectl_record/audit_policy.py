"""Kubernetes audit policy (audit.k8s.io/v1 ``Policy``): load and evaluate.

This mirrors kube-apiserver's behaviour (k8s.io/apiserver ``pkg/audit/policy``):

* ``reader.go``: the document must be ``apiVersion: audit.k8s.io/v1``,
  ``kind: Policy``; unknown fields are tolerated (the API server falls back to
  lenient decoding and only logs a warning; we collect them in
  ``Policy.warnings``); the policy is validated; a policy with no rules is
  refused ("loaded illegal policy with 0 rules").
* ``validation.go``: levels, omitStages values, nonResourceURLs that start
  with ``/`` and only end in ``*``, lower-case DNS-subdomain groups,
  ``resourceNames`` only together with ``resources``, and no rule mixing
  resources/namespaces with nonResourceURLs.
* ``checker.go``: rules are tried in order and the first match wins; no match
  means level ``None``.  Each rule's omitStages is the union of the
  policy-level and the rule-level lists; ``omitManagedFields`` of a rule, when
  set, overrides the policy's.  When nothing matches, the policy-level
  omitStages / omitManagedFields are returned.

The policy is evaluated with the *authenticated* user (kube-apiserver's audit
filter runs before the impersonation filter), so callers should pass the
real user, not the impersonated one.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

__all__ = [
    "Level",
    "Stage",
    "PolicyError",
    "GroupResources",
    "PolicyRule",
    "Policy",
    "RequestAttributes",
    "Decision",
    "load_policy",
    "load_policy_file",
]

API_VERSION = "audit.k8s.io/v1"
KIND = "Policy"


class PolicyError(ValueError):
    """A policy document that kube-apiserver would refuse (one-line message)."""


class Level(str, enum.Enum):
    NONE = "None"
    METADATA = "Metadata"
    REQUEST = "Request"
    REQUEST_RESPONSE = "RequestResponse"

    @property
    def rank(self) -> int:
        return _LEVEL_RANK[self.value]

    def __lt__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank < Level(other).rank  # type: ignore[arg-type]

    def __le__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank <= Level(other).rank  # type: ignore[arg-type]

    def __gt__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank > Level(other).rank  # type: ignore[arg-type]

    def __ge__(self, other: object) -> bool:  # type: ignore[override]
        return self.rank >= Level(other).rank  # type: ignore[arg-type]

    def __str__(self) -> str:
        return self.value

    __hash__ = str.__hash__


_LEVEL_RANK = {"None": 0, "Metadata": 1, "Request": 2, "RequestResponse": 3}


class Stage(str, enum.Enum):
    REQUEST_RECEIVED = "RequestReceived"
    RESPONSE_STARTED = "ResponseStarted"
    RESPONSE_COMPLETE = "ResponseComplete"
    PANIC = "Panic"

    def __str__(self) -> str:
        return self.value


_VALID_STAGES = [s.value for s in Stage]
_VALID_LEVELS = [lv.value for lv in Level]

# validation.NameIsDNSSubdomain (lower case RFC 1123 subdomain, <= 253 chars)
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")

_POLICY_FIELDS = {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
_RULE_FIELDS = {
    "level",
    "users",
    "userGroups",
    "verbs",
    "resources",
    "namespaces",
    "nonResourceURLs",
    "omitStages",
    "omitManagedFields",
}
_GR_FIELDS = {"group", "resources", "resourceNames"}


@dataclass(frozen=True)
class GroupResources:
    group: str = ""
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()


@dataclass(frozen=True)
class PolicyRule:
    level: Level
    users: tuple[str, ...] = ()
    user_groups: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ()
    resources: tuple[GroupResources, ...] = ()
    namespaces: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()
    omit_stages: tuple[Stage, ...] = ()  # as written in the rule
    omit_managed_fields: bool | None = None

    def summary(self) -> str:
        """One line, e.g. ``Metadata: resources [""/secrets,configmaps] verbs [get]``."""
        parts = [self.level.value + ":"]
        if self.users:
            parts.append(f"users [{','.join(self.users)}]")
        if self.user_groups:
            parts.append(f"userGroups [{','.join(self.user_groups)}]")
        if self.verbs:
            parts.append(f"verbs [{','.join(self.verbs)}]")
        if self.namespaces:
            parts.append("namespaces [" + ",".join(n if n else '""' for n in self.namespaces) + "]")
        if self.resources:
            rs = []
            for gr in self.resources:
                g = gr.group or '""'
                r = g + "/" + (",".join(gr.resources) if gr.resources else "*")
                if gr.resource_names:
                    r += "(" + ",".join(gr.resource_names) + ")"
                rs.append(r)
            parts.append(f"resources [{' '.join(rs)}]")
        if self.non_resource_urls:
            parts.append(f"nonResourceURLs [{','.join(self.non_resource_urls)}]")
        if not self.users and not self.user_groups and not self.verbs and not self.namespaces \
                and not self.resources and not self.non_resource_urls:
            parts.append("everything")
        if self.omit_stages:
            parts.append(f"omitStages [{','.join(s.value for s in self.omit_stages)}]")
        if self.omit_managed_fields is not None:
            parts.append(f"omitManagedFields {str(self.omit_managed_fields).lower()}")
        return " ".join(parts)


@dataclass
class RequestAttributes:
    """authorizer.Attributes, as far as the audit policy looks at them."""

    user: str = ""
    groups: Sequence[str] = ()
    verb: str = ""
    namespace: str = ""
    resource: str = ""
    subresource: str = ""
    api_group: str = ""
    name: str = ""
    path: str = ""
    resource_request: bool = True
    api_version: str = ""

    @classmethod
    def from_event(cls, event: dict) -> "RequestAttributes":
        """The attributes an audit.k8s.io/v1 Event was evaluated with (the
        authenticated user, not the impersonated one; ``path`` without query)."""
        user = event.get("user") or {}
        ref = event.get("objectRef")
        path = (event.get("requestURI") or "").split("?", 1)[0]
        if ref:
            return cls(user=user.get("username", ""), groups=list(user.get("groups") or ()), verb=event.get("verb", ""),
                       namespace=ref.get("namespace", "") or "", resource=ref.get("resource", "") or "",
                       subresource=ref.get("subresource", "") or "", api_group=ref.get("apiGroup", "") or "",
                       name=ref.get("name", "") or "", path=path, resource_request=True,
                       api_version=ref.get("apiVersion", "") or "")
        return cls(user=user.get("username", ""), groups=list(user.get("groups") or ()), verb=event.get("verb", ""),
                   path=path, resource_request=False)


@dataclass(frozen=True)
class Decision:
    level: Level
    omit_stages: frozenset[Stage] = frozenset()
    omit_managed_fields: bool = False
    rule_index: int | None = None  # index of the matching rule, None when none matched

    def stage_omitted(self, stage: str | Stage) -> bool:
        return Stage(stage) in self.omit_stages


@dataclass
class Policy:
    rules: list[PolicyRule]
    omit_stages: tuple[Stage, ...] = ()
    omit_managed_fields: bool = False
    warnings: list[str] = field(default_factory=list)

    def evaluate(self, attrs: RequestAttributes) -> Decision:
        for index, rule in enumerate(self.rules):
            if _rule_matches(rule, attrs):
                stages = frozenset(self.omit_stages) | frozenset(rule.omit_stages)
                omf = self.omit_managed_fields if rule.omit_managed_fields is None else rule.omit_managed_fields
                return Decision(rule.level, stages, omf, index)
        return Decision(Level.NONE, frozenset(self.omit_stages), self.omit_managed_fields, None)


# ---------------------------------------------------------------- matching


def _rule_matches(r: PolicyRule, a: RequestAttributes) -> bool:
    if r.users and a.user not in r.users:
        return False
    if r.user_groups and not any(g in r.user_groups for g in (a.groups or ())):
        return False
    if r.verbs and a.verb not in r.verbs:
        return False
    if r.namespaces or r.resources:
        return _matches_resource(r, a)
    if r.non_resource_urls:
        return _matches_non_resource(r, a)
    return True


def _path_matches(path: str, spec: str) -> bool:
    if spec == "*" or spec == path:
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


def _matches_non_resource(r: PolicyRule, a: RequestAttributes) -> bool:
    if a.resource_request:
        return False
    return any(_path_matches(a.path, spec) for spec in r.non_resource_urls)


def _matches_resource(r: PolicyRule, a: RequestAttributes) -> bool:
    if not a.resource_request:
        return False
    if r.namespaces and a.namespace not in r.namespaces:  # "" = cluster-scoped
        return False
    if not r.resources:
        return True
    combined = f"{a.resource}/{a.subresource}" if a.subresource else a.resource
    for gr in r.resources:
        if gr.group != a.api_group:
            continue
        if not gr.resources:
            return True
        for res in gr.resources:
            if gr.resource_names and a.name not in gr.resource_names:
                continue
            if res == combined or res == "*":
                return True
            if a.subresource and res.startswith("*/") and a.subresource == res[2:]:
                return True
            if res.endswith("/*") and a.resource == res[:-2]:
                return True
    return False


# ----------------------------------------------------------------- loading


def _parse_text(text: str | bytes) -> Any:
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PolicyError(f"failed decoding: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    stripped = text.lstrip()
    if stripped.startswith("{"):
        try:
            return json.loads(text)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"failed decoding: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    try:
        import yaml
    except ImportError:  # pragma: no cover - PyYAML is a dependency
        raise PolicyError("failed decoding: YAML policies need PyYAML (JSON works without it)") from None
    loader = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader
    try:
        docs = [d for d in yaml.load_all(text, Loader=loader) if d is not None]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise PolicyError(f"failed decoding: invalid YAML{where}: {problem}") from None
    if not docs:
        return None
    if len(docs) > 1:
        raise PolicyError(f"failed decoding: expected one policy document, found {len(docs)}")
    return docs[0]


def _one_line(value: Any) -> str:
    s = json.dumps(value, default=str)
    return s if len(s) <= 80 else s[:77] + "..."


def _str_list(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PolicyError(f"{where}: expected a list of strings, got {_one_line(value)}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise PolicyError(f"{where}[{i}]: expected a string, got {_one_line(item)}")
        out.append(item)
    return tuple(out)


def _opt_bool(value: Any, where: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise PolicyError(f"{where}: expected true or false, got {_one_line(value)}")
    return value


def _stages(value: Any, where: str) -> tuple[Stage, ...]:
    out = []
    for i, s in enumerate(_str_list(value, where)):
        if s not in _VALID_STAGES:
            raise PolicyError(f"{where}[{i}]: invalid value {s!r}: allowed stages are {','.join(_VALID_STAGES)}")
        out.append(Stage(s))
    return tuple(out)


def _unknown(obj: dict, allowed: set[str], where: str, warnings: list[str]) -> None:
    for key in obj:
        if key not in allowed:
            warnings.append(f"{where}: unknown field {key!r} (ignored, as kube-apiserver's lenient decoding does)")


def _group_resources(value: Any, where: str, warnings: list[str]) -> tuple[GroupResources, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise PolicyError(f"{where}: expected a list of {{group, resources, resourceNames}}, got {_one_line(value)}")
    out = []
    for i, item in enumerate(value):
        w = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise PolicyError(f"{w}: expected a mapping, got {_one_line(item)}")
        _unknown(item, _GR_FIELDS, w, warnings)
        group = item.get("group", "")
        if group is None:
            group = ""
        if not isinstance(group, str):
            raise PolicyError(f"{w}.group: expected a string, got {_one_line(group)}")
        if group and (len(group) > 253 or not _DNS1123_SUBDOMAIN.match(group)):
            raise PolicyError(
                f"{w}.group: invalid value {group!r}: must be a lower case DNS subdomain"
                " (the API group without a version, e.g. 'apps', '' for the core group)"
            )
        resources = _str_list(item.get("resources"), f"{w}.resources")
        names = _str_list(item.get("resourceNames"), f"{w}.resourceNames")
        if names and not resources:
            raise PolicyError(f"{w}.resourceNames: using resourceNames requires at least one resource")
        out.append(GroupResources(group, resources, names))
    return tuple(out)


def _rule(value: Any, where: str, warnings: list[str]) -> PolicyRule:
    if not isinstance(value, dict):
        raise PolicyError(f"{where}: expected a mapping, got {_one_line(value)}")
    _unknown(value, _RULE_FIELDS, where, warnings)
    level = value.get("level")
    if level is None or level == "":
        raise PolicyError(f"{where}.level: Required value")
    if not isinstance(level, str) or level not in _VALID_LEVELS:
        raise PolicyError(f"{where}.level: Unsupported value {_one_line(level)}: supported values: {', '.join(_VALID_LEVELS)}")
    urls = _str_list(value.get("nonResourceURLs"), f"{where}.nonResourceURLs")
    for i, url in enumerate(urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            raise PolicyError(f"{where}.nonResourceURLs[{i}]: invalid value {url!r}: non-resource URL rules must begin with a '/' character")
        if "*" in url[:-1]:
            raise PolicyError(
                f"{where}.nonResourceURLs[{i}]: invalid value {url!r}: non-resource URL wildcards '*' must be the final character of the rule"
            )
    resources = _group_resources(value.get("resources"), f"{where}.resources", warnings)
    namespaces = _str_list(value.get("namespaces"), f"{where}.namespaces")
    if urls and (resources or namespaces):
        raise PolicyError(f"{where}.nonResourceURLs: rules cannot apply to both regular resources and non-resource URLs")
    return PolicyRule(
        level=Level(level),
        users=_str_list(value.get("users"), f"{where}.users"),
        user_groups=_str_list(value.get("userGroups"), f"{where}.userGroups"),
        verbs=_str_list(value.get("verbs"), f"{where}.verbs"),
        resources=resources,
        namespaces=namespaces,
        non_resource_urls=urls,
        omit_stages=_stages(value.get("omitStages"), f"{where}.omitStages"),
        omit_managed_fields=_opt_bool(value.get("omitManagedFields"), f"{where}.omitManagedFields"),
    )


def load_policy(text: str | bytes) -> Policy:
    """Parse and validate a policy document (YAML or JSON)."""
    doc = _parse_text(text)
    if doc is None:
        raise PolicyError("loaded illegal policy with 0 rules (the document is empty)")
    if not isinstance(doc, dict):
        raise PolicyError(f"failed decoding: expected a Policy mapping, got {_one_line(doc)}")
    api_version = doc.get("apiVersion")
    kind = doc.get("kind")
    if api_version != API_VERSION or kind != KIND:
        raise PolicyError(
            f"unknown group version field apiVersion={api_version!r}, kind={kind!r} in policy"
            f" (want apiVersion: {API_VERSION}, kind: {KIND})"
        )
    warnings: list[str] = []
    _unknown(doc, _POLICY_FIELDS, "policy", warnings)
    omit_stages = _stages(doc.get("omitStages"), "omitStages")
    omf = _opt_bool(doc.get("omitManagedFields"), "omitManagedFields")
    rules_value = doc.get("rules")
    if rules_value is None:
        rules_value = []
    if not isinstance(rules_value, list):
        raise PolicyError(f"rules: expected a list of rules, got {_one_line(rules_value)}")
    rules = [_rule(r, f"rules[{i}]", warnings) for i, r in enumerate(rules_value)]
    if not rules:
        raise PolicyError("loaded illegal policy with 0 rules")
    return Policy(rules=rules, omit_stages=omit_stages, omit_managed_fields=bool(omf), warnings=warnings)


def load_policy_file(path: str) -> Policy:
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as exc:
        raise PolicyError(f"failed to read policy file {path!r}: {exc.strerror}") from None
    try:
        return load_policy(data)
    except PolicyError as exc:
        raise PolicyError(f"{exc}: from file {path}") from None


def first_matching(policy: Policy, attrs_list: Iterable[RequestAttributes]) -> list[Decision]:
    """Evaluate several requests at once (convenience for ``audit policy --check``)."""
    return [policy.evaluate(a) for a in attrs_list]
