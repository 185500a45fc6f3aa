"""Understand a kubectl command line the way kubectl v1.32 does, without running it.

`parse(argv)` takes the words after `kubectl` and never raises: unknown commands, unknown flags and
malformed input are kept as typed. Stdlib only; it runs in the background ingester.

How words are read (cobra + pflag, as kubectl uses them):

- The command path is found first (cobra's Find): at each level the first word that is not a
  flag or a flag's value names a subcommand (or an alias: `create deploy`, `top po`,
  `config use`). Global flags may come before or after it. A word that names no command at the
  root is a plugin or a typo: `verb` is that word as typed and only global flags are understood.
- Then every word is read with the flags of that command (its own flags shadow a global flag of
  the same long name): `--flag=v`, `--flag v`, `-fv`, `-f=v`, `-f v`, shorthand groups `-it`,
  `-itn ns` (the last of a group may take a value). `_` in a long name counts as `-`.
  "bool" and "optional" flags (--dry-run, --validate, --cascade) take a value only after `=`.
  `--` ends the flags; the words after it are `dashdash`.
- Unknown flags are kept as typed in `flags`: `--x=y` keeps its value, a bare `--x` or `-x`
  consumes nothing (kubectl would refuse the line anyway). One exception: before the command
  word, a flag the current level does not know takes the next word if it takes a value in any
  kubectl command, so `kubectl -o yaml get po` finds `get` as cobra does.

Decisions where kubectl itself has no answer (see the field meanings on ParsedArgs):

- resource: a comma list or several TYPE/NAME words give every type, canonical, de-duplicated,
  in typed order, joined by "," (`get po,svc` → "pods,services"). `namespaced` is then known
  only when all of them agree.
- mutating = the command may change cluster state (a create with --dry-run or --local too).
  "Did it change anything" is `mutating and not dry_run and not local_only`. exec, attach and
  debug run arbitrary code or add containers; port-forward and proxy open tunnels through which
  anything can be changed: all mutating. cp is mutating only when it copies into a pod.
  `label/annotate/set env --list` only print. config * edits the local kubeconfig: not mutating.
  Unknown commands (plugins): not mutating, not local (nothing is known).
- local_only (no API call), checked against the v1.32.4 binary with an unreachable server:
  config *, completion, kustomize, plugin, help, options, alpha, shell completion requests,
  bare `kubectl`, any known command with -h/--help, `version --client`, `--local` (label,
  annotate, patch, set *, wait), and `create <generator>` with a client dry run (--dry-run,
  --dry-run=client or =true). Not local: `create -f --dry-run=client` (reads OpenAPI for
  validation), `apply/run/expose/create role|clusterrole --dry-run=client` (discovery),
  `create job --from` (reads the cronjob), explain, api-resources, api-versions, cluster-info.
- dry_run: --dry-run bare, =client, =server or a true boolean; =none, a false boolean or an
  invalid value (kubectl refuses to run) are not a dry run. The last --dry-run wins.
- namespace/context/cluster/user/kubeconfig/server: the global flag's last non-empty value.
  `cp ns/pod:/path` names a namespace inside the word: `namespace` still comes from -n only.
- files: -f/--filename values split on "," as kubectl does (a string-slice flag), and
  -k/--kustomize values, otherwise as typed. `logs -f` is --follow and gives no file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from . import _kubectl_flags as _kf


@dataclass
class ParsedArgs:
    verb: Optional[str] = None              # "get", "rollout restart"; a plugin's name as typed
    resource: Optional[str] = None          # canonical plural, lower-case; "pods,services" for several types
    names: list[str] = field(default_factory=list)
    namespace: Optional[str] = None         # -n/--namespace only
    all_namespaces: bool = False
    context: Optional[str] = None
    cluster: Optional[str] = None
    user: Optional[str] = None
    kubeconfig: Optional[str] = None
    server: Optional[str] = None
    impersonate: Optional[dict] = None      # {"as": str, "as_group": [str], "as_uid": str}, keys given only
    files: list[str] = field(default_factory=list)
    mutating: bool = False
    dry_run: bool = False
    local_only: bool = False
    namespaced: Optional[bool] = None       # None when unknown (no resource, CRDs, mixed types)
    positionals: list[str] = field(default_factory=list)
    dashdash: Optional[list[str]] = None    # the words after "--", None without "--"
    flags: list[tuple[str, Optional[str]]] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Built-in resources of a v1.32 cluster (`kubectl api-resources`, default feature gates, no
# add-ons): plural, short names, API group ("" = core), namespaced, kind.
_BUILTINS: tuple[tuple[str, tuple[str, ...], str, bool, str], ...] = (
    ("bindings", (), "", True, "Binding"),
    ("componentstatuses", ("cs",), "", False, "ComponentStatus"),
    ("configmaps", ("cm",), "", True, "ConfigMap"),
    ("endpoints", ("ep",), "", True, "Endpoints"),
    ("events", ("ev",), "", True, "Event"),
    ("limitranges", ("limits",), "", True, "LimitRange"),
    ("namespaces", ("ns",), "", False, "Namespace"),
    ("nodes", ("no",), "", False, "Node"),
    ("persistentvolumeclaims", ("pvc",), "", True, "PersistentVolumeClaim"),
    ("persistentvolumes", ("pv",), "", False, "PersistentVolume"),
    ("pods", ("po",), "", True, "Pod"),
    ("podtemplates", (), "", True, "PodTemplate"),
    ("replicationcontrollers", ("rc",), "", True, "ReplicationController"),
    ("resourcequotas", ("quota",), "", True, "ResourceQuota"),
    ("secrets", (), "", True, "Secret"),
    ("serviceaccounts", ("sa",), "", True, "ServiceAccount"),
    ("services", ("svc",), "", True, "Service"),
    ("mutatingwebhookconfigurations", (), "admissionregistration.k8s.io", False, "MutatingWebhookConfiguration"),
    ("validatingadmissionpolicies", (), "admissionregistration.k8s.io", False, "ValidatingAdmissionPolicy"),
    ("validatingadmissionpolicybindings", (), "admissionregistration.k8s.io", False, "ValidatingAdmissionPolicyBinding"),
    ("validatingwebhookconfigurations", (), "admissionregistration.k8s.io", False, "ValidatingWebhookConfiguration"),
    ("customresourcedefinitions", ("crd", "crds"), "apiextensions.k8s.io", False, "CustomResourceDefinition"),
    ("apiservices", (), "apiregistration.k8s.io", False, "APIService"),
    ("controllerrevisions", (), "apps", True, "ControllerRevision"),
    ("daemonsets", ("ds",), "apps", True, "DaemonSet"),
    ("deployments", ("deploy",), "apps", True, "Deployment"),
    ("replicasets", ("rs",), "apps", True, "ReplicaSet"),
    ("statefulsets", ("sts",), "apps", True, "StatefulSet"),
    ("selfsubjectreviews", (), "authentication.k8s.io", False, "SelfSubjectReview"),
    ("tokenreviews", (), "authentication.k8s.io", False, "TokenReview"),
    ("localsubjectaccessreviews", (), "authorization.k8s.io", True, "LocalSubjectAccessReview"),
    ("selfsubjectaccessreviews", (), "authorization.k8s.io", False, "SelfSubjectAccessReview"),
    ("selfsubjectrulesreviews", (), "authorization.k8s.io", False, "SelfSubjectRulesReview"),
    ("subjectaccessreviews", (), "authorization.k8s.io", False, "SubjectAccessReview"),
    ("horizontalpodautoscalers", ("hpa",), "autoscaling", True, "HorizontalPodAutoscaler"),
    ("cronjobs", ("cj",), "batch", True, "CronJob"),
    ("jobs", (), "batch", True, "Job"),
    ("certificatesigningrequests", ("csr",), "certificates.k8s.io", False, "CertificateSigningRequest"),
    ("leases", (), "coordination.k8s.io", True, "Lease"),
    ("endpointslices", (), "discovery.k8s.io", True, "EndpointSlice"),
    ("events", ("ev",), "events.k8s.io", True, "Event"),
    ("flowschemas", (), "flowcontrol.apiserver.k8s.io", False, "FlowSchema"),
    ("prioritylevelconfigurations", (), "flowcontrol.apiserver.k8s.io", False, "PriorityLevelConfiguration"),
    ("ingressclasses", (), "networking.k8s.io", False, "IngressClass"),
    ("ingresses", ("ing",), "networking.k8s.io", True, "Ingress"),
    ("networkpolicies", ("netpol",), "networking.k8s.io", True, "NetworkPolicy"),
    ("runtimeclasses", (), "node.k8s.io", False, "RuntimeClass"),
    ("poddisruptionbudgets", ("pdb",), "policy", True, "PodDisruptionBudget"),
    ("clusterrolebindings", (), "rbac.authorization.k8s.io", False, "ClusterRoleBinding"),
    ("clusterroles", (), "rbac.authorization.k8s.io", False, "ClusterRole"),
    ("rolebindings", (), "rbac.authorization.k8s.io", True, "RoleBinding"),
    ("roles", (), "rbac.authorization.k8s.io", True, "Role"),
    ("priorityclasses", ("pc",), "scheduling.k8s.io", False, "PriorityClass"),
    ("csidrivers", (), "storage.k8s.io", False, "CSIDriver"),
    ("csinodes", (), "storage.k8s.io", False, "CSINode"),
    ("csistoragecapacities", (), "storage.k8s.io", True, "CSIStorageCapacity"),
    ("storageclasses", ("sc",), "storage.k8s.io", False, "StorageClass"),
    ("volumeattachments", (), "storage.k8s.io", False, "VolumeAttachment"),
)


def _resource_index() -> tuple[dict[str, str], dict[str, set[str]], dict[str, bool]]:
    """word (plural, singular = kind lower-cased, short name) → plural; plural → its API groups;
    plural → namespaced."""
    by_word: dict[str, str] = {}
    groups: dict[str, set[str]] = {}
    scoped: dict[str, bool] = {}
    for plural, shorts, group, namespaced, kind in _BUILTINS:
        for word in (plural, kind.lower(), *shorts):
            by_word[word] = plural
        groups.setdefault(plural, set()).add(group)
        scoped[plural] = namespaced
    return by_word, groups, scoped


_RESOURCE_BY_WORD, _RESOURCE_GROUPS, _NAMESPACED = _resource_index()


def _is_version(word: str) -> bool:
    """v1, v2, v1beta1, v1alpha2: an API version segment of `deployments.v1.apps`."""
    if not word.startswith("v") or len(word) < 2 or not word[1].isdigit():
        return False
    rest = word[1:].lstrip("0123456789")
    for level in ("alpha", "beta"):
        if rest.startswith(level):
            tail = rest[len(level):]
            return tail.isdigit()
    return rest == ""


def canonical_resource(word: str) -> str:
    """`po`, `Pod`, `pods`, `deployment.apps`, `deployments.v1.apps` → their canonical plural.
    Unknown types (CRDs, add-on APIs, typos) are returned lower-cased as typed."""
    lowered = word.lower()
    plural = _RESOURCE_BY_WORD.get(lowered)
    if plural:
        return plural
    name, _, group = lowered.partition(".")
    plural = _RESOURCE_BY_WORD.get(name)
    if plural is None:
        return lowered
    version, _, rest = group.partition(".")
    if _is_version(version):  # TYPE.VERSION.GROUP; "pods.v1" is the core group
        group = rest
    return plural if group in _RESOURCE_GROUPS[plural] else lowered


# ---------------------------------------------------------------------------------------------
# Flag sets

_TAKES_WORD = frozenset({"value", "list"})  # kinds that consume the next word when no "=" is given


@dataclass(frozen=True)
class _FlagSet:
    kinds: dict[str, tuple[str, bool]]  # long name → (kind, is the global flag)
    shorts: dict[str, str]              # shorthand letter → long name


def _flag_set(command: Optional[str]) -> _FlagSet:
    """The flags `kubectl COMMAND` accepts; None for an unknown command (global flags only)."""
    kinds: dict[str, tuple[str, bool]] = {}
    shorts: dict[str, str] = {}
    own = _kf.COMMAND_FLAGS.get(command, {}) if command else {}
    for table, is_global in ((own, False), (_kf.GLOBAL_FLAGS, True)):
        for long, (short, kind) in table.items():
            if long in kinds:  # a command's own flag shadows the global one, shorthand included
                continue
            kinds[long] = (kind, is_global)
            if short and short[1:] not in shorts:
                shorts[short[1:]] = long
    return _FlagSet(kinds, shorts)


def _any_command_flag_set() -> _FlagSet:
    """Every flag of every command; a name that takes a value somewhere counts as taking one.
    Used only before the command word is known."""
    kinds: dict[str, tuple[str, bool]] = {}
    shorts: dict[str, str] = {}
    for table in (_kf.GLOBAL_FLAGS, *_kf.COMMAND_FLAGS.values()):
        for long, (short, kind) in table.items():
            if long not in kinds or kind in _TAKES_WORD:
                kinds[long] = (kind, False)
            if short and (short[1:] not in shorts or kind in _TAKES_WORD):
                shorts[short[1:]] = long
    return _FlagSet(kinds, shorts)


_FLAG_SETS: dict[Optional[str], _FlagSet] = {}
_ANY_FLAGS = _any_command_flag_set()


def _flags_of(command: Optional[str]) -> _FlagSet:
    if command not in _FLAG_SETS:
        _FLAG_SETS[command] = _flag_set(command)
    return _FLAG_SETS[command]


# A token: ("pos", word, None), ("flag", name, value) or ("--", "", None).
_Token = tuple[str, str, Optional[str]]
_Lookup = Callable[[str], Optional[tuple[str, str]]]  # long name or "-x" → (long name, kind)


def _lookup_in(*sets: _FlagSet) -> _Lookup:
    def lookup(name: str) -> Optional[tuple[str, str]]:
        for fs in sets:
            long = fs.shorts.get(name[1:]) if len(name) == 2 and name[1] != "-" else name
            if long in fs.kinds:
                return long, fs.kinds[long][0]
        return None
    return lookup


def _read(words: list[str], i: int, lookup: _Lookup) -> tuple[int, list[_Token]]:
    """pflag's reading of words[i]: the tokens it yields and the index of the next word."""
    word = words[i]
    i += 1
    if len(word) < 2 or word[0] != "-":  # "", "-" and plain words are arguments
        return i, [("pos", word, None)]
    if word == "--":
        return i, [("--", "", None)]
    if word.startswith("--"):
        name, eq, value = word[2:].partition("=")
        if not name or name[0] in "-=":  # "---x", "--=x": pflag's bad flag syntax
            return i, [("flag", word, None)]
        found = lookup("--" + name.replace("_", "-"))
        if found is None:
            return i, [("flag", "--" + name, value if eq else None)]
        long, kind = found
        if eq:
            return i, [("flag", long, value)]
        if kind in _TAKES_WORD and i < len(words):
            return i + 1, [("flag", long, words[i])]
        return i, [("flag", long, None)]
    tokens: list[_Token] = []
    rest = word[1:]
    while rest:
        found = lookup("-" + rest[0])
        if found is None:  # unknown shorthand: keep what is left of the group as typed
            tokens.append(("flag", "-" + rest, None))
            break
        long, kind = found
        if len(rest) > 2 and rest[1] == "=":  # -n=foo
            tokens.append(("flag", long, rest[2:]))
            break
        if kind not in _TAKES_WORD:  # -it: bools (and optionals) take nothing, the group goes on
            tokens.append(("flag", long, None))
            rest = rest[1:]
            continue
        if len(rest) > 1:  # -nfoo
            tokens.append(("flag", long, rest[1:]))
        elif i < len(words):  # -n foo
            tokens.append(("flag", long, words[i]))
            i += 1
        else:
            tokens.append(("flag", long, None))
        break
    return i, tokens


def _find_command(words: list[str]) -> tuple[Optional[str], bool, set[int]]:
    """cobra's Find: (command path or the unknown word, whether kubectl knows it, indices of the
    command words)."""
    path = ""
    used: set[int] = set()
    i = 0
    while i < len(words):
        lookup = _lookup_in(_flags_of(path or None), _ANY_FLAGS)
        start = i
        i, tokens = _read(words, i, lookup)
        kind, word, _ = tokens[0]
        if kind == "--":
            break
        if kind != "pos":
            continue
        child = _kf.SUBCOMMANDS.get(path, {}).get(word)
        if child is None:
            if not path:  # the root knows no such command: a plugin (or a typo)
                return word, False, {start}
            break
        path = child
        used.add(start)
    return path or None, True, used


# ---------------------------------------------------------------------------------------------
# What each command's arguments mean

# Commands whose arguments are TYPE NAME… or TYPE/NAME… (kubectl's resource builder).
_RESOURCE_ARG_COMMANDS = frozenset({
    "get", "describe", "delete", "edit", "patch", "scale", "autoscale", "expose", "wait",
    "rollout history", "rollout pause", "rollout restart", "rollout resume", "rollout status",
    "rollout undo", "set resources", "set subject", "apply edit-last-applied",
    "apply view-last-applied",
})
# Their arguments end with KEY=VALUE / KEY- pairs (cmdutil.GetResourcesAndPairs) or images.
_PAIR_COMMANDS = frozenset({"label", "annotate", "set env"})
# The last argument is not a resource: the selector expression, the service account name.
_LAST_ARG_COMMANDS = frozenset({"set selector", "set serviceaccount"})
# POD or TYPE/NAME as first argument; a bare name is a pod.
_POD_COMMANDS = frozenset({"logs", "exec", "attach", "port-forward", "debug"})
# Commands that keep the words after "--" for themselves (a container command).
_DASH_COMMANDS = frozenset({"exec", "run", "debug", "create deployment", "create job", "create cronjob"})
# Fixed resource, names are the arguments.
_FIXED_RESOURCE = {
    "cordon": "nodes", "uncordon": "nodes", "drain": "nodes", "top node": "nodes",
    "top pod": "pods", "certificate approve": "certificatesigningrequests",
    "certificate deny": "certificatesigningrequests", "events": "events",
}
# `create <generator>` and `run`: the created type; the first argument is the name.
_CREATE_RESOURCE = {
    "create clusterrole": "clusterroles", "create clusterrolebinding": "clusterrolebindings",
    "create configmap": "configmaps", "create cronjob": "cronjobs",
    "create deployment": "deployments", "create ingress": "ingresses", "create job": "jobs",
    "create namespace": "namespaces", "create poddisruptionbudget": "poddisruptionbudgets",
    "create priorityclass": "priorityclasses", "create quota": "resourcequotas",
    "create role": "roles", "create rolebinding": "rolebindings",
    "create secret docker-registry": "secrets", "create secret generic": "secrets",
    "create secret tls": "secrets", "create service clusterip": "services",
    "create service externalname": "services", "create service loadbalancer": "services",
    "create service nodeport": "services", "create serviceaccount": "serviceaccounts",
    "create token": "serviceaccounts", "run": "pods",
}
# create generators that still call the API with --dry-run=client (checked on v1.32.4):
# role/clusterrole validate --resource through discovery; token has no dry run.
_CREATE_NEEDS_API = frozenset({"create role", "create clusterrole", "create token"})

# May change cluster state (see the module docstring for exec, tunnels and cp).
_MUTATING = frozenset({
    "create", *_CREATE_RESOURCE, "apply", "apply edit-last-applied", "apply set-last-applied",
    "delete", "patch", "edit", "replace", "scale", "autoscale", "label", "annotate",
    "set env", "set image", "set resources", "set selector", "set serviceaccount", "set subject",
    "rollout restart", "rollout undo", "rollout pause", "rollout resume", "expose", "cordon",
    "uncordon", "drain", "taint", "certificate approve", "certificate deny", "auth reconcile",
    "exec", "attach", "debug", "port-forward", "proxy",
})
# Commands that never call the API server.
_LOCAL_ROOTS = frozenset({"config", "completion", "kustomize", "plugin", "help", "options", "alpha",
                          "__complete", "__completeNoDesc"})
# Groups without a command of their own: alone they print help.
_GROUPS = frozenset({"rollout", "set", "certificate", "top", "auth", "create secret", "create service"})

_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})  # strconv.ParseBool's true spellings


def _bool(value: Optional[str]) -> bool:
    """A bool flag's value as strconv.ParseBool reads it; a bare flag is true. kubectl refuses
    an invalid value, so it counts as false."""
    return value is None or value in _TRUE


def _dry_run_mode(value: Optional[str]) -> Optional[str]:
    """--dry-run's mode, "client" or "server", or None when it is no dry run."""
    if value is None or value == "client" or value in _TRUE:  # bare --dry-run is client
        return "client"
    if value == "server":
        return "server"
    return None


def _types_and_names(args: list[str]) -> tuple[list[str], list[str]]:
    """kubectl's resource arguments: `TYPE[,TYPE…] [NAME…]` or `TYPE/NAME…`."""
    if not args:
        return [], []
    types: list[str] = []
    names: list[str] = []
    first, rest = args[0], args[1:]
    if "/" in first:
        rest = args
    else:
        types += first.split(",")
    for arg in rest:
        kind, slash, name = arg.partition("/")
        if slash:
            types += kind.split(",")
            names.append(name)
        else:
            names.append(arg)
    return types, names


def _pod_arg(arg: str) -> tuple[list[str], list[str]]:
    kind, slash, name = arg.partition("/")
    return ([kind], [name]) if slash else (["pods"], [arg])


def _until_pair(args: list[str], is_pair: Callable[[str], bool]) -> list[str]:
    out: list[str] = []
    for arg in args:
        if is_pair(arg):
            break
        out.append(arg)
    return out


def _is_kv_pair(arg: str) -> bool:  # cmdutil.GetResourcesAndPairs
    return ("=" in arg and arg[0] != "=") or (arg.endswith("-") and arg != "-")


def _is_taint(arg: str) -> bool:  # kubectl taint: KEY=VAL:EFFECT, KEY:EFFECT-, KEY-
    return "=" in arg or ":" in arg or arg.endswith("-")


def _cp_pods(args: list[str]) -> list[str]:
    """Pod names of `[NAMESPACE/]POD:PATH` arguments (kubectl cp's extractFileSpec)."""
    pods = []
    for arg in args:
        spec, colon, _ = arg.partition(":")
        if colon and spec and spec.count("/") <= 1:
            pods.append(spec.rpartition("/")[2])
    return pods


def _resource_args(verb: str, args: list[str]) -> tuple[list[str], list[str]]:
    """(types as typed, names) named by the arguments of a known command."""
    if verb in _RESOURCE_ARG_COMMANDS:
        return _types_and_names(args)
    if verb in _PAIR_COMMANDS:
        return _types_and_names(_until_pair(args, _is_kv_pair))
    if verb == "set image":
        return _types_and_names(_until_pair(args, lambda a: "=" in a))
    if verb == "taint":
        return _types_and_names(_until_pair(args, _is_taint))
    if verb in _LAST_ARG_COMMANDS:
        return _types_and_names(args[:-1])
    if verb in _POD_COMMANDS:
        return _pod_arg(args[0]) if args else ([], [])
    if verb in _FIXED_RESOURCE:
        return [_FIXED_RESOURCE[verb]], args
    if verb in _CREATE_RESOURCE:
        return [_CREATE_RESOURCE[verb]], args[:1]
    if verb == "cp":
        return ["pods"], _cp_pods(args)
    if verb == "auth can-i" and len(args) > 1 and not args[1].startswith("/"):
        return _types_and_names(args[1:])  # VERB TYPE[/NAME] [NAME]; "/logs" is a URL path
    if verb == "explain" and args:
        # TYPE[.FIELD…]; a group-qualified type (deployments.v1.apps) is taken whole.
        whole = canonical_resource(args[0])
        return [whole if whole in _NAMESPACED else args[0].partition(".")[0]], []
    return [], []


def _canonical_types(types: list[str]) -> tuple[Optional[str], Optional[bool]]:
    seen: list[str] = []
    for kind in types:
        plural = canonical_resource(kind) if kind else ""
        if plural and plural not in seen:
            seen.append(plural)
    if not seen:
        return None, None
    scopes = {_NAMESPACED.get(p) for p in seen}
    return ",".join(seen), scopes.pop() if len(scopes) == 1 else None


# ---------------------------------------------------------------------------------------------


def parse(argv: list[str]) -> ParsedArgs:
    """Read the words after `kubectl` as kubectl v1.32 would. Never raises."""
    words = [w if isinstance(w, str) else str(w) for w in argv]
    verb, known, used = _find_command(words)
    fs = _flags_of(verb if known else None)
    lookup = _lookup_in(fs)

    out = ParsedArgs(verb=verb)
    rest = [w for i, w in enumerate(words) if i not in used]
    i = 0
    while i < len(rest):
        i, tokens = _read(rest, i, lookup)
        for kind, name, value in tokens:
            if kind == "pos":
                out.positionals.append(name)
            elif kind == "flag":
                out.flags.append((name, value))
            else:
                out.dashdash = rest[i:]
                i = len(rest)

    given: dict[str, Optional[str]] = {}  # last value of each known flag
    impersonate: dict = {}
    for name, value in out.flags:
        spec = fs.kinds.get(name)
        if spec is None:
            continue
        given[name] = value
        is_global = spec[1]
        if name == "--filename":
            out.files += [f for f in (value or "").split(",") if f]
        elif name == "--kustomize" and value:
            out.files.append(value)
        elif is_global and name == "--as-group" and value:
            impersonate.setdefault("as_group", []).append(value)
        elif is_global and name in ("--as", "--as-uid") and value:
            impersonate[name[2:].replace("-", "_")] = value
    out.impersonate = impersonate or None

    def global_value(name: str) -> Optional[str]:
        spec = fs.kinds.get(name)
        return (given.get(name) or None) if spec and spec[1] else None

    out.namespace = global_value("--namespace")
    out.context = global_value("--context")
    out.cluster = global_value("--cluster")
    out.user = global_value("--user")
    out.kubeconfig = global_value("--kubeconfig")
    out.server = global_value("--server")
    out.all_namespaces = "--all-namespaces" in given and _bool(given["--all-namespaces"])
    dry_mode = _dry_run_mode(given["--dry-run"]) if "--dry-run" in given else None
    out.dry_run = dry_mode is not None

    if not known:
        return out
    args = out.positionals + (out.dashdash or []) if verb not in _DASH_COMMANDS else out.positionals
    if verb:
        types, out.names = _resource_args(verb, args)
        out.resource, out.namespaced = _canonical_types(types)

    def flag_on(name: str) -> bool:
        return name in given and _bool(given[name])

    out.mutating = verb in _MUTATING
    if verb == "cp":
        out.mutating = bool(args) and bool(_cp_pods(args[-1:]))  # copying into a pod
    elif verb in ("label", "annotate", "set env") and flag_on("--list"):
        out.mutating = False

    out.local_only = (
        verb is None
        or verb.split()[0] in _LOCAL_ROOTS
        or verb in _GROUPS
        or flag_on("--help")
        or flag_on("--local")
        or (verb == "version" and flag_on("--client"))
        or (verb in _CREATE_RESOURCE and verb.startswith("create ") and verb not in _CREATE_NEEDS_API
            and dry_mode == "client" and not (verb == "create job" and given.get("--from")))
    )
    return out
