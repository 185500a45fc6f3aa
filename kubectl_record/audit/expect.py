"""What API calls a recorded kubectl command sends (kubectl v1.32, checked against the test
server with the real binary; see tests/test_audit_expect.py).

`expect(record)` gives an :class:`Expect`; `score(exp, ev)` says how well one audit event fits:
0 = cannot be this command's, 1 = generic (discovery, /version, OpenAPI: any kubectl sends
them), 2 = the command's resource (or a resource it is known to touch), 3 = also its object name.
`min_calls` is how many resource calls the command sends at least when it succeeds (fewer
means the policy dropped some: `partial`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import kubectl_args
from .formats import sets_items

READ = frozenset({"get", "list", "watch"})
WRITE = frozenset({"create", "update", "patch"})
ALL = None  # any verb / any resource


@dataclass
class Expect:
    calls: bool = True
    resources: frozenset | None = ALL      # main resources (score 2/3)
    verbs: frozenset | None = ALL
    related: dict = field(default_factory=dict)  # resource -> verbs (score 2, never 3)
    namespace: str | None = None            # events in another namespace do not fit
    names: frozenset = frozenset()
    min_calls: int = 1
    managers: frozenset | None = None       # fieldManager values its writes carry (None: unknown)
    gets: int | None = None                 # GETs of each named object it sends (None: unknown)
    get_order: str | None = None            # "first": those GETs precede its other calls; "last": follow them
    paths: frozenset = frozenset()          # non-resource paths that are its own calls (score 2)
    plan: tuple | None = None               # its resource calls in order, see _plan (None: not known)
    table: bool | None = None               # answered with Table rows (True) or objects (False), see _table
    sets: frozenset | None = None           # what its patches may set (formats.sets_of lines; None: not known)


def _res_list(resource: str | None) -> frozenset | None:
    if not resource:
        return ALL
    return frozenset(r.split(".", 1)[0] for r in resource.split(",") if r)


_TOUCHES = {  # kubectl verb -> (verbs on the main resource, related resources and their verbs, min calls)
    "get": (None, {}, 1),
    "describe": (READ, {"events": READ, "*": READ}, 1),
    "events": (READ, {}, 1),
    "wait": (READ, {}, 1),
    "delete": (frozenset({"delete", "deletecollection"}) | READ, {}, 1),
    "scale": (READ | WRITE, {}, 2),
    "label": (READ | WRITE, {}, 2),
    "annotate": (READ | WRITE, {}, 2),
    "patch": (READ | WRITE, {}, 1),
    "edit": (READ | WRITE, {}, 1),
    "taint": (READ | WRITE, {}, 2),
    "cordon": (READ | WRITE, {}, 2),
    "uncordon": (READ | WRITE, {}, 2),
    "drain": (READ | WRITE, {"pods": READ | frozenset({"create", "delete"})}, 2),
    "autoscale": (READ, {"horizontalpodautoscalers": WRITE}, 2),
    "expose": (READ, {"services": WRITE}, 2),
    "rollout restart": (READ | WRITE, {}, 2),
    "rollout pause": (READ | WRITE, {}, 2),
    "rollout resume": (READ | WRITE, {}, 2),
    "rollout undo": (READ | WRITE, {"replicasets": READ, "controllerrevisions": READ}, 2),
    "rollout status": (READ, {"replicasets": READ}, 1),
    "rollout history": (READ, {"replicasets": READ, "controllerrevisions": READ}, 1),
    "certificate approve": (READ | WRITE, {}, 2),
    "certificate deny": (READ | WRITE, {}, 2),
}
_SUB_VERBS = frozenset({"get", "create"})
_POD_SUB = {"exec": "exec", "attach": "attach", "port-forward": "portforward", "cp": "exec"}


_MANAGERS = {  # kubectl v1.32 default --field-manager per command (checked with the real binary)
    "create": "kubectl-create", "run": "kubectl-run", "replace": "kubectl-replace", "edit": "kubectl-edit",
    "patch": "kubectl-patch", "label": "kubectl-label", "annotate": "kubectl-annotate", "taint": "kubectl-taint",
    "autoscale": "kubectl-autoscale", "expose": "kubectl-expose", "rollout restart": "kubectl-rollout",
    "rollout pause": "kubectl-rollout", "rollout resume": "kubectl-rollout",
}
_NO_MANAGER = frozenset({"scale", "cordon", "uncordon", "drain", "rollout undo", "certificate approve",
                         "certificate deny"})


def _managers(verb: str, flags: list) -> frozenset | None:
    given = [v for n, v in flags if n == "--field-manager" and v]
    if given:
        return frozenset({given[-1]})
    if verb == "apply":
        return frozenset({"kubectl-client-side-apply", "kubectl", "kubectl-last-applied"})
    if verb.startswith("set "):
        return frozenset({"kubectl-set"})
    if verb.startswith("create "):
        return frozenset({"kubectl-create"})
    if verb in _MANAGERS:
        return frozenset({_MANAGERS[verb]})
    if verb in _NO_MANAGER:
        return frozenset()
    return None


_MEMO: dict = {}


def expect(record: dict) -> Expect:
    """The expected-call model of one record (masked argv is enough: names and namespaces are
    never masked). Memoized: the same command lines come back all the time."""
    key = (tuple(record.get("argv") or ()), record.get("verb"), record.get("resource"),
           tuple(record.get("names") or ()), record.get("namespace"), bool(record.get("all_namespaces")),
           bool(record.get("local_only")), record.get("exit_code") not in (0, None), record.get("context"))
    e = _MEMO.get(key)
    if e is None:
        if len(_MEMO) > 50_000:
            _MEMO.clear()
        e = _MEMO[key] = _expect_full(record)
    return e


def _expect_full(record: dict) -> Expect:
    e = _expect(record)
    if e.calls:
        verb = record.get("verb") or ""
        p = kubectl_args.parse(record.get("argv") or [])
        e.managers = _managers(verb, p.flags)
        e.table = _table(verb, dict(p.flags))
        e.sets = _sets(verb, p)
        flags = {n for n, _ in p.flags}
        if e.names and not flags & {"--watch", "-w", "--follow", "-f", "--filename"}:
            e.gets, e.get_order = _GETS.get(verb, (None, None))
        if record.get("exit_code") in (0, None):  # a failure takes other paths (describe lists on a 404)
            e.plan = _plan(verb, e, flags)
    return e


# The resource calls (after discovery) of the commonest commands, in order, as steps (verb,
# resource — None for the command's own —, subresource, at most how many; None: any number),
# checked with the real kubectl v1.32 against the test server (the requests in the side file of
# bench/audit_workload.py).
_PLANS_NAMED = {  # one named object
    "get": (("get", None, "", 1),),
    "label": (("get", None, "", 1), ("patch", None, "", 1)),
    "annotate": (("get", None, "", 1), ("patch", None, "", 1)),
    "rollout restart": (("get", None, "", 1), ("patch", None, "", 1)),
    "scale": (("get", None, "", 1), ("patch", None, "scale", 1)),
}
_PLANS_POD = {  # one named pod
    "describe": (("get", None, "", 2), ("list", "events", "", 1)),
    "logs": (("get", None, "", 1), ("get", None, "log", 1)),
}


def _plan(verb: str, e: Expect, flags: set) -> tuple | None:
    """The command's calls in order, when known: an assignment of events that does not follow
    them (more calls of a step than it sends, or out of order) cannot be this run's."""
    if flags & {"--watch", "-w", "--watch-only", "--follow", "-f", "--filename", "-k", "--kustomize", "--all",
                "-l", "--selector", "--field-selector", "--raw", "--dry-run", "--previous", "-p", "--all-containers",
                "--recursive", "-R", "--local"}:
        return None
    if (verb.startswith("create ") and verb != "create token") and e.resources and len(e.resources) == 1:
        return (("create", None, "", 1),)
    if len(e.names) == 1:
        if e.resources == frozenset({"pods"}) and verb in _PLANS_POD:
            return _PLANS_POD[verb]
        if e.resources and len(e.resources) == 1:
            return _PLANS_NAMED.get(verb)
        return None
    if e.names:
        return (("get", None, "", len(e.names)),) if verb == "get" and e.resources and len(e.resources) == 1 else None
    if verb == "get" and e.resources:
        return (("list", None, "", None),)  # chunked lists send several
    if verb == "auth whoami":
        return (("create", "selfsubjectreviews", "", 1),)
    return None


def follows_plan(exp: Expect, evs: list) -> bool:
    """Do these events (audit rows, in time order) fit the command's plan? Calls may be missing
    (a policy can drop them), never extra or out of order."""
    if exp.plan is None:
        return True
    at: tuple[int, int] | None = (0, 0)
    for ev in evs:
        at = plan_step(exp, at, ev)
        if at is None:
            return False
    return True


def plan_step(exp: Expect, at: tuple[int, int], ev: tuple) -> tuple[int, int] | None:
    """Where in EXP's plan (step, calls of it so far) the run is after call EV, from AT; None
    when EV cannot come next. Steps of any number count one call (how many does not matter)."""
    plan = exp.plan
    j, used = at
    while j < len(plan):
        verb, res, sub, most = plan[j]
        if (ev[2] == verb and (ev[7] or "") == sub and (ev[6] in exp.resources if res is None else ev[6] == res)
                and (most is None or used < most)):
            return j, (used + 1 if most is not None else 1)
        j += 1
        used = 0
    return None


def _sets(verb: str, p) -> frozenset | None:
    """The lines of formats.sets_of its patches can carry: `label`/`annotate` send only the
    pairs that change (a subset of the command line's), `scale` its --replicas."""
    if verb in ("label", "annotate"):
        return frozenset(sets_items(verb, [a for a in p.positionals if "=" in a or a.endswith("-")]))
    if verb == "scale":
        n = dict(p.flags).get("--replicas")
        return frozenset({f"replicas:{n}"}) if n and n.isdigit() else None
    return None


def _table(verb: str, flags: dict) -> bool | None:
    """Does the command ask for Table rows (`kubectl get`'s own printing: no -o, or -o wide) or
    for whole objects? An audit event at RequestResponse level shows which it got (responseObject
    kind Table or not), where the request itself is the same GET. None: not known."""
    if verb == "get":
        if "--raw" in flags:
            return None
        return (flags.get("--output") or "") in ("", "wide") and flags.get("--server-print") != "false" \
            and "--template" not in flags
    return False if verb in _GETS else None


# GETs of each named object, checked with the real kubectl against the test server.
_GETS = {
    "get": (1, None), "describe": (2, "first"), "logs": (1, "first"), "label": (1, "first"),
    "annotate": (1, "first"), "scale": (1, "first"), "rollout restart": (1, "first"),
    "rollout pause": (1, "first"), "rollout resume": (1, "first"), "cordon": (1, "first"),
    "uncordon": (1, "first"), "delete": (1, "last"),
}


def _expect(record: dict) -> Expect:
    verb = record.get("verb") or ""
    argv = record.get("argv") or []
    if record.get("local_only"):
        return Expect(calls=False, min_calls=0)
    p = kubectl_args.parse(argv)
    ns = None if record.get("all_namespaces") else record.get("namespace")
    names = frozenset(record.get("names") or p.names or ())
    res = _res_list(record.get("resource"))
    failed = record.get("exit_code") not in (0, None)
    flags = {n for n, _ in p.flags}
    watch = "--watch" in flags or "-w" in flags or "--watch-only" in flags

    def mk(**kw) -> Expect:
        e = Expect(namespace=ns, names=names, **kw)
        if failed:
            e.min_calls = min(e.min_calls, 1)
        return e

    if p.files or verb in ("apply", "replace", "diff", "kustomize") or verb.startswith("apply "):
        # objects come from files: any resource, any namespace they name
        return Expect(resources=ALL, verbs=ALL, namespace=None, names=frozenset(), min_calls=1)
    if verb == "get":
        verbs = READ if watch else (frozenset({"get"}) if names else frozenset({"list"}))
        return mk(resources=res, verbs=verbs, min_calls=max(1, len(names)))
    if verb.startswith("create ") or verb in ("create", "run"):
        r = res or frozenset({"pods"} if verb == "run" else ())
        rel = {"pods": READ | frozenset({"create", "delete"})} if verb == "run" else {}
        if verb == "create token":
            rel = {"serviceaccounts": frozenset({"create"})}
        if verb == "create job" and "--from" in flags:
            rel = {"cronjobs": READ}
        return mk(resources=r or ALL, verbs=frozenset({"create"}) | READ, related=rel, min_calls=1)
    if verb in _POD_SUB or verb == "logs" or verb == "debug":
        rel = {}
        r = res or frozenset({"pods"})
        if r != frozenset({"pods"}):  # logs deploy/web, exec svc/x: the owner, then its pods
            rel = {"pods": READ}
        verbs = READ | _SUB_VERBS
        if verb == "debug":
            verbs = ALL
            rel = {"pods": ALL, "nodes": READ}
        pods_names = names
        if verb == "cp":
            pods_names = frozenset(a.split(":", 1)[0].split("/")[-1] for a in p.positionals if ":" in a)
        e = mk(resources=r, verbs=verbs, related=rel, min_calls=2)
        e.names = pods_names
        return e
    if verb == "auth whoami":
        return mk(resources=frozenset({"selfsubjectreviews"}), verbs=frozenset({"create"}), min_calls=1)
    if verb == "auth can-i":
        return mk(resources=frozenset({"selfsubjectaccessreviews", "selfsubjectrulesreviews"}),
                  verbs=frozenset({"create"}), min_calls=1)
    if verb == "version":
        return mk(resources=frozenset(), verbs=READ, min_calls=1, paths=frozenset({"/version"}))
    if verb in ("api-resources", "api-versions", "explain"):
        return mk(resources=frozenset(), verbs=READ, min_calls=0)
    if verb == "cluster-info":
        return mk(resources=frozenset({"services"}), verbs=READ, min_calls=1)
    if verb.startswith("top"):
        return mk(resources=frozenset({"nodes", "pods"}), verbs=READ, min_calls=1)
    if verb.startswith("set "):
        return mk(resources=res, verbs=READ | WRITE, min_calls=2)
    if verb in _TOUCHES:
        verbs, rel, minimum = _TOUCHES[verb]
        if verb in ("cordon", "uncordon", "drain"):
            res = frozenset({"nodes"})
        if verb == "certificate approve" or verb == "certificate deny":
            res = frozenset({"certificatesigningrequests"})
        if verb == "delete" and not names:
            minimum = 1
        elif verb == "delete":
            minimum = len(names)
        if verb == "get":
            verbs = READ
        return mk(resources=res, verbs=verbs, related=dict(rel), min_calls=minimum)
    _, known, _ = kubectl_args._find_command([str(a) for a in argv])
    if not known:
        # A plugin (kubectl-foo) runs its own binary with its own user agent, or a typo.
        return Expect(calls=False, min_calls=0)
    return mk(resources=res, verbs=ALL, min_calls=1)


def score(exp: Expect, resource: str, subresource: str, verb: str, namespace: str, name: str,
          manager: str = "", path: str = "", response_kind: str = "", sets: str = "") -> int:
    """0..3, see the module docstring."""
    if not exp.calls:
        return 0
    if sets and exp.sets is not None and not exp.sets.issuperset(sets.split("\n")):
        return 0  # a patch setting what this command line does not (another `label` run's)
    if response_kind and response_kind != "Status" and exp.table is not None \
            and (response_kind == "Table") != exp.table:
        return 0  # a Table where the command reads objects, or the reverse (errors answer a Status)
    if manager and exp.managers is not None and manager not in exp.managers:
        return 0
    if not resource:
        return 2 if path in exp.paths else 1  # non-resource URL: discovery, /version, /openapi
    if exp.namespace and namespace and namespace != exp.namespace:
        return 0
    main = exp.resources is ALL or resource in exp.resources
    if main and (exp.verbs is ALL or verb in exp.verbs or (subresource and verb in _SUB_VERBS)):
        if name and exp.names:
            if name in exp.names:
                return 3
            # a named command touches other objects of its type only via list/watch
            return 2 if verb in ("list", "watch") or exp.resources is ALL else 0
        return 2
    rel = exp.related.get(resource)
    if rel is None:
        rel = exp.related.get("*")
        if rel is not None and (rel is ALL or verb in rel):
            return 1
        return 0
    if rel is ALL or verb in rel:
        return 2
    return 0
