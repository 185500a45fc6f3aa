"""Shell completion: `kubectl record <TAB>` through kubectl's plugin completion (kubectl ≥ 1.26
runs `kubectl_complete-record ARGS… PARTIAL` and reads Cobra's protocol: one candidate a line,
`candidate<TAB>description` allowed, then `:DIRECTIVE`), and bash/zsh scripts for running
`kubectl-record` directly, which ask the same engine.

Subcommands and flags come from the click commands; values for --context, --namespace,
--cluster, --verb, --resource, --host, --user, --session from the records (read-only, never
ingesting: completion must answer at once); IDs for show/delete are the most recent records.
"""

from __future__ import annotations

import os
import sqlite3
import sys

# Cobra's ShellCompDirective bits.
DEFAULT = 0
NO_SPACE = 2
NO_FILE = 4
KEEP_ORDER = 32

VALUE_COLUMNS = {
    "--context": "context", "-n": "namespace", "--namespace": "namespace", "--cluster": "cluster",
    "--verb": "verb", "--resource": "resource", "--host": "host", "--user": "user", "--session": "session",
    "--identity": "identity",
}
FIXED_VALUES = {
    "-o": ("table", "wide", "json", "jsonl", "csv", "tsv", "yaml", "name", "custom-columns=", "template="),
    "--output": ("table", "wide", "json", "jsonl", "csv", "tsv", "yaml", "name", "custom-columns=", "template="),
    "--source": ("wrapper", "shim", "hook", "import"),
    "--format": ("jsonl", "bash-history", "zsh-history"),
    "--since": ("1h", "1d", "7d", "30d", "today", "yesterday"),
    "--until": ("1h", "1d", "7d", "30d", "today", "yesterday"),
    "--older-than": ("30d", "90d", "180d", "1y"),
}
ID_COMMANDS = ("show", "delete")


def _store():
    from . import paths

    path = paths.db_path()
    if not os.path.exists(path):
        return None
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.5)
        conn.execute("PRAGMA query_only = 1")
        return conn
    except sqlite3.Error:
        return None


def distinct_values(conn, column: str, prefix: str, limit: int = 200) -> list[str]:
    """Distinct values of an indexed column starting with PREFIX, in order: one index seek per
    value (a skip scan), so a million records answer as fast as ten."""
    out: list[str] = []
    last = prefix
    inclusive = True
    try:
        while len(out) < limit:
            op = ">=" if inclusive else ">"
            row = conn.execute(f"SELECT min({column}) FROM records WHERE {column} {op} ?", (last,)).fetchone()
            inclusive = False
            if not row or row[0] is None or not row[0].startswith(prefix):
                break
            out.append(row[0])
            last = row[0]
    except sqlite3.Error:
        return out
    return out


def _commands():
    from .cli import cli

    import click

    ctx = click.Context(cli, info_name="kubectl record")
    names = cli.list_commands(ctx)
    return cli, ctx, names


def _flags(command) -> list[tuple[str, str]]:
    import click

    out = []
    for param in getattr(command, "params", []):
        if isinstance(param, click.Option) and not param.hidden:
            for opt in [*param.opts, *param.secondary_opts]:
                out.append((opt, (param.help or "").split("\n")[0]))
    out.append(("--help", "Show help."))
    return out


def _takes_value(command, flag: str) -> bool:
    import click

    for param in getattr(command, "params", []):
        if isinstance(param, click.Option) and flag in param.opts:
            return not param.is_flag and not param.count
    return False


def complete(args: list[str]) -> tuple[list[str], int]:
    """Candidates for the last word of ARGS (the words after `kubectl record`)."""
    if not args:
        args = [""]
    *before, partial = args
    if "--" in before or before[:1] == ["--"]:
        return [], DEFAULT  # after `--` the words are kubectl's own
    cli, ctx, names = _commands()
    if not before:
        if partial.startswith("-"):
            return [f"{f}\t{h}" if h else f for f, h in (("--help", "Show help."), ("--version", "Show the version."),
                                                        ("--", "Run kubectl and record it."))
                    if f.startswith(partial)], NO_FILE
        out = []
        for name in names:
            if name.startswith(partial):
                command = cli.get_command(ctx, name)
                if command is None or getattr(command, "hidden", False):
                    continue
                out.append(f"{name}\t{command.get_short_help_str(60)}")
        return out, NO_FILE
    command = cli.get_command(ctx, before[0])
    if command is None:
        return [], NO_FILE
    import click

    # Nested groups (audit, shim, config …): walk down.
    rest = before[1:]
    while isinstance(command, click.Group) and rest and not rest[0].startswith("-"):
        sub = command.get_command(ctx, rest[0])
        if sub is None:
            break
        command, rest = sub, rest[1:]
    if isinstance(command, click.Group) and not rest and not partial.startswith("-"):
        sub_names = command.list_commands(ctx)
        return [f"{n}\t{command.get_command(ctx, n).get_short_help_str(60)}" for n in sub_names
                if n.startswith(partial)], NO_FILE

    flag, value_prefix = None, partial
    if partial.startswith("--") and "=" in partial:
        flag, value_prefix = partial.split("=", 1)
    elif before and before[-1].startswith("-") and _takes_value(command, before[-1]):
        flag = before[-1]
    if flag is not None:
        values = _values(flag, value_prefix)
        if values is None:
            return [], DEFAULT  # a file or free text
        if partial.startswith("--") and "=" in partial:
            values = [f"{flag}={v}" for v in values]
        return values, NO_FILE | (NO_SPACE if any(v.endswith("=") for v in values) else 0)
    if partial.startswith("-"):
        return [f"{f}\t{h}" if h else f for f, h in _flags(command) if f.startswith(partial)], NO_FILE
    if command.name in ID_COMMANDS:
        return _recent_ids(partial), NO_FILE | KEEP_ORDER
    if command.name == "import":
        return [], DEFAULT
    return [], NO_FILE


def _values(flag: str, prefix: str) -> list[str] | None:
    if flag in FIXED_VALUES:
        return [v for v in FIXED_VALUES[flag] if v.startswith(prefix)]
    column = VALUE_COLUMNS.get(flag)
    if column is None:
        return None
    conn = _store()
    if conn is None:
        return []
    return distinct_values(conn, column, prefix)


def _recent_ids(prefix: str, limit: int = 20) -> list[str]:
    conn = _store()
    if conn is None:
        return []
    try:
        rows = conn.execute("SELECT id, command FROM records ORDER BY started_at DESC, rowid DESC LIMIT 500").fetchall()
    except sqlite3.Error:
        return []
    out = []
    for ident, command in rows:
        short = ident[-8:]
        if short.startswith(prefix):
            out.append(f"{short}\t{command[:70]}")
        elif ident.startswith(prefix) and prefix:
            out.append(f"{ident}\t{command[:70]}")
        if len(out) >= limit:
            break
    return out


def main(argv: list[str] | None = None) -> int:
    """`kubectl_complete-record ARGS… PARTIAL`, as kubectl calls it; prints Cobra's protocol."""
    argv = sys.argv[1:] if argv is None else argv
    shell = os.environ.get("KUBECTL_RECORD_COMPLETION_SCRIPT")
    if shell in ("bash", "zsh"):
        # `source <(KUBECTL_RECORD_COMPLETION_SCRIPT=bash kubectl_complete-record)`; the same as
        # `kubectl-record completion bash` once that command is registered in the CLI.
        sys.stdout.write(script(shell))
        return 0
    if argv[:1] == ["__complete"]:
        argv = argv[1:]
    try:
        candidates, directive = complete(argv)
    except Exception:  # completion must never spill a traceback into the prompt
        candidates, directive = [], NO_FILE
    out = sys.stdout
    for c in candidates:
        out.write(c.replace("\n", " ") + "\n")
    out.write(f":{directive}\n")
    out.flush()
    return 0


# --- scripts for `kubectl-record` run directly ------------------------------------------------

BASH = r'''# bash completion for kubectl-record (also completes `kubectl record` through kubectl_complete-record)
_kubectl_record_complete() {
    local cur="${COMP_WORDS[COMP_CWORD]}" line directive out
    local -a words=("${COMP_WORDS[@]:1:COMP_CWORD-1}" "$cur")
    out=$(kubectl_complete-record "${words[@]}" 2>/dev/null) || return
    directive=${out##*:}
    out=${out%:*}
    COMPREPLY=()
    while IFS= read -r line; do
        [[ -n $line ]] && COMPREPLY+=("${line%%$'\t'*}")
    done <<< "$out"
    if (( ${#COMPREPLY[@]} == 0 )) && (( (directive & 4) == 0 )); then
        COMPREPLY=($(compgen -f -- "$cur"))
    fi
    if (( directive & 2 )); then compopt -o nospace 2>/dev/null; fi
}
complete -o default -F _kubectl_record_complete kubectl-record
'''

ZSH = r'''#compdef kubectl-record
# zsh completion for kubectl-record
_kubectl_record() {
    local -a words_ lines candidates descs
    local out directive line
    words_=("${(@)words[2,CURRENT]}")
    out=$(kubectl_complete-record "${words_[@]}" 2>/dev/null) || return 1
    lines=("${(@f)out}")
    directive=${lines[-1]#:}
    lines=("${(@)lines[1,-2]}")
    for line in $lines; do
        [[ -z $line ]] && continue
        candidates+=("${line%%$'\t'*}")
        if [[ $line == *$'\t'* ]]; then descs+=("${${line%%$'\t'*}//:/\\:}:${line#*$'\t'}"); else descs+=("${line//:/\\:}"); fi
    done
    if (( ${#candidates} )); then
        if (( directive & 2 )); then _describe -t values 'kubectl-record' descs -S ''; else _describe -t values 'kubectl-record' descs; fi
    elif (( (directive & 4) == 0 )); then
        _files
    fi
}
if [[ $zsh_eval_context[-1] == loadautofunc ]]; then _kubectl_record "$@"; else compdef _kubectl_record kubectl-record; fi
'''


def script(shell: str) -> str:
    return {"bash": BASH, "zsh": ZSH}[shell]


def _click_command():
    import click

    @click.command("completion")
    @click.argument("shell", type=click.Choice(["bash", "zsh"]))
    def completion(shell: str) -> None:
        """Print the completion script for running `kubectl-record` directly:
        `source <(kubectl-record completion bash)`. `kubectl record <TAB>` needs none: kubectl
        (≥ 1.26) asks kubectl_complete-record on PATH."""
        click.echo(script(shell), nl=False)

    return completion


def __getattr__(name: str):
    if name == "completion":
        return _click_command()
    raise AttributeError(name)


if __name__ == "__main__":
    sys.exit(main())
