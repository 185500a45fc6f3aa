"""Generate kubectl_record/_kubectl_flags.py from the kubectl v1.32 flag table.

    python tools/gen_kubectl_flags.py [TSV] [OUT]

TSV defaults to ../shared/notes/kubectl-1.32-flags.tsv (relative to the repository), OUT to
kubectl_record/_kubectl_flags.py. The output is committed: the parser must not read the TSV or
run kubectl at run time.

The TSV only has rows for commands with flags of their own, so the command tree (every command
path and its aliases) is written out below. It was taken from `kubectl <path> --help` of the
v1.32.4 binary on this machine (the "Available Commands" and "Aliases" sections), plus the
commands kubectl hides from its help. Where the real binary accepts flags the TSV lacks
(deprecated, hidden from --help), they are added in HIDDEN_FLAGS; the binary wins.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TSV = REPO.parent / "shared" / "notes" / "kubectl-1.32-flags.tsv"
DEFAULT_OUT = REPO / "kubectl_record" / "_kubectl_flags.py"
KINDS = ("bool", "value", "list", "optional")

# One command path a line, then its aliases. Group commands (rollout, set, config…) are listed
# too: `kubectl rollout` alone is a valid invocation (it prints help).
TREE = """
alpha
annotate
api-resources
api-versions
apply
apply edit-last-applied
apply set-last-applied
apply view-last-applied
attach
auth
auth can-i
auth reconcile
auth whoami
autoscale
certificate
certificate approve
certificate deny
cluster-info
cluster-info dump
completion
config
config current-context
config delete-cluster
config delete-context
config delete-user
config get-clusters
config get-contexts
config get-users
config rename-context
config set
config set-cluster
config set-context
config set-credentials
config unset
config use-context | use
config view
cordon
cp
create
create clusterrole
create clusterrolebinding
create configmap | cm
create cronjob | cj
create deployment | deploy
create ingress | ing
create job
create namespace | ns
create poddisruptionbudget | pdb
create priorityclass | pc
create quota | resourcequota
create role
create rolebinding
create secret
create secret docker-registry
create secret generic
create secret tls
create service | svc
create service clusterip
create service externalname
create service loadbalancer
create service nodeport
create serviceaccount | sa
create token
debug
delete
describe
diff
drain
edit
events
exec
explain
expose
get
help
kustomize
label
logs
options
patch
plugin
plugin list
port-forward
proxy
replace
rollout
rollout history
rollout pause
rollout restart
rollout resume
rollout status
rollout undo
run
scale
set
set env
set image
set resources
set selector
set serviceaccount | sa
set subject
taint
top
top node | nodes no
top pod | pods po
uncordon
version
wait
__complete
__completeNoDesc
"""
# `help`, `options`, `alpha` and cobra's `__complete`/`__completeNoDesc` (what shell completion
# runs) exist in the binary but are not in `kubectl --help`'s list.

# Accepted by the v1.32.4 binary but hidden from --help (checked: `kubectl <cmd> <flag> --help`
# does not fail with "unknown flag"). `--record` is deprecated; kustomize's `--reorder` too.
HIDDEN_FLAGS = {
    **{cmd: [("", "--record", "bool")] for cmd in (
        "annotate", "apply", "apply edit-last-applied", "autoscale", "create", "edit", "expose",
        "label", "patch", "run", "scale", "set image", "set resources", "set selector",
        "set serviceaccount")},
    "kustomize": [("", "--reorder", "value")],
}
# cobra adds -h/--help to every command; kubectl's `options` does not list it.
HELP_FLAG = ("-h", "--help", "bool")


def read_tsv(path: Path) -> dict[str, list[tuple[str, str, str]]]:
    """command → [(short, long, kind)] in file order; "(global)" holds the global flags."""
    table: dict[str, list[tuple[str, str, str]]] = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#") or line.startswith("command\t"):
            continue
        cols = line.split("\t")
        if len(cols) < 4 or cols[3] not in KINDS or not cols[2].startswith("--"):
            raise SystemExit(f"{path}:{lineno}: unexpected row {line!r}")
        command, short, long, kind = cols[:4]
        table.setdefault(command, []).append((short, long, kind))
    return table


def read_tree() -> tuple[list[str], dict[str, dict[str, str]]]:
    """All command paths, and parent path → {word as typed (name or alias) → child path}."""
    paths: list[str] = []
    children: dict[str, dict[str, str]] = {}
    for line in TREE.strip().splitlines():
        path, _, aliases = line.partition("|")
        path = path.strip()
        paths.append(path)
        parent, _, name = path.rpartition(" ")
        for word in [name, *aliases.split()]:
            children.setdefault(parent, {})[word] = path
    return paths, children


def render(table: dict[str, list[tuple[str, str, str]]]) -> str:
    paths, children = read_tree()
    unknown = sorted(set(table) - set(paths) - {"(global)"})
    if unknown:
        raise SystemExit(f"commands in the TSV but not in TREE: {unknown}")
    for cmd, extra in HIDDEN_FLAGS.items():
        table.setdefault(cmd, []).extend(extra)
    table["(global)"].append(HELP_FLAG)

    def flag_lines(rows: list[tuple[str, str, str]], indent: str) -> list[str]:
        rows = sorted(rows, key=lambda row: row[1])
        return [f"{indent}{long!r}: ({short!r}, {kind!r})," for short, long, kind in rows]

    out = [
        '"""kubectl v1.32.4 commands and flags. Generated by tools/gen_kubectl_flags.py from',
        "shared/notes/kubectl-1.32-flags.tsv and the command tree in that script: do not edit.",
        "",
        'A flag is long name → (shorthand or "", kind). Kinds: "bool" never takes the next word',
        '(a value only as --flag=v); "value" takes the next word or =v; "list" is a repeatable value;',
        '"optional" takes a value only as --flag=v (--dry-run, --validate, --cascade).',
        '"""',
        "",
        "from __future__ import annotations",
        "",
        "GLOBAL_FLAGS: dict[str, tuple[str, str]] = {",
        *flag_lines(table["(global)"], "    "),
        "}",
        "",
        "# Flags of a command's own; they shadow a global flag of the same long name",
        "# (`config set-context --namespace` is the context's namespace, and has no -n).",
        "COMMAND_FLAGS: dict[str, dict[str, tuple[str, str]]] = {",
    ]
    for cmd in sorted(c for c in table if c != "(global)"):
        out += [f"    {cmd!r}: {{", *flag_lines(table[cmd], "        "), "    },"]
    out += [
        "}",
        "",
        '# Parent command path ("" for the root) → word as typed (name or alias) → command path.',
        "SUBCOMMANDS: dict[str, dict[str, str]] = {",
    ]
    for parent in sorted(children):
        out.append(f"    {parent!r}: {{")
        out += [f"        {word!r}: {path!r}," for word, path in sorted(children[parent].items())]
        out.append("    },")
    out += [
        "}",
        "",
        "COMMANDS: frozenset[str] = frozenset({",
        *[f"    {p!r}," for p in sorted(paths)],
        "})",
        "",
    ]
    return "\n".join(out)


def main(argv: list[str]) -> int:
    tsv = Path(argv[0]) if argv else DEFAULT_TSV
    out = Path(argv[1]) if len(argv) > 1 else DEFAULT_OUT
    out.write_text(render(read_tsv(tsv)))
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
