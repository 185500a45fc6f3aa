"""The shell hooks: what `kubectl record init bash|zsh` prints, and what `doctor` can tell about them.

The hook scripts live in the repository's shell/ directory, which the wheel installs as
kubectl_record/shell/. `init_script` prints, in order: a line setting __KR_PYTHON (the
interpreter that has kubectl_record installed, for the background ingester), the library
(record.bash / record.zsh) and the hook (hook.bash / hook.zsh). Loading the result twice is
harmless: the library only defines __kr_* functions and the hook checks what is already there.
"""

from __future__ import annotations

import os
import shlex
import sys

import click

from . import paths, settings

SHELLS = {
    "bash": ("record.bash", "hook.bash"),
    "zsh": ("record.zsh", "hook.zsh"),
}


class UnsupportedShell(ValueError):
    """init was asked for a shell that has no hook."""

    def __init__(self, shell: str):
        super().__init__(
            f"no hook for shell {shell!r}: supported shells are {', '.join(sorted(SHELLS))}"
        )
        self.shell = shell


def _read_shell_file(name: str) -> str:
    with open(os.path.join(paths.shell_dir(), name), encoding="utf-8") as f:
        return f.read()


def init_script(shell: str, python: str | None = None) -> str:
    """The text to eval in an interactive shell's rc file."""
    name = os.path.basename(shell or "")
    if name not in SHELLS:
        raise UnsupportedShell(shell)
    library, hook = SHELLS[name]
    python = python or sys.executable
    parts = [
        f"# kubectl-record {name} hook (kubectl record init {name})",
        f"__KR_PYTHON={shlex.quote(python)}",
        *settings.shell_defaults(),
        _read_shell_file(library),
        _read_shell_file(hook),
    ]
    return "\n".join(part.rstrip("\n") for part in parts) + "\n"


def _is_ancestor(pid: int, start: int, depth: int = 8) -> bool:
    """True when PID is START or one of its first DEPTH ancestors (Linux /proc; elsewhere only
    the direct parent can be checked)."""
    current = start
    for _ in range(depth):
        if current == pid:
            return True
        if current <= 1:
            return False
        try:
            with open(f"/proc/{current}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            return False
        # pid (comm) state ppid ...: comm may hold spaces and parentheses.
        fields = stat[stat.rfind(b")") + 2 :].split()
        try:
            current = int(fields[1])
        except (IndexError, ValueError):
            return False
    return False


def hook_status(environ=None, ppid: int | None = None) -> dict:
    """What the environment says about a hook in the shell that started us.

    The hook exports KUBECTL_RECORD_HOOK="<shell>:<mechanism>:<shell pid>" and
    KUBECTL_RECORD_SESSION. A child process of that shell (doctor, run from the prompt) sees
    both. The variables are also inherited by scripts and shells started from it, where no hook
    runs: `active` is true only when the shell that exported them is our parent or an ancestor
    and the variable's pid is not stale.
    """
    environ = os.environ if environ is None else environ
    value = environ.get("KUBECTL_RECORD_HOOK", "")
    session = environ.get("KUBECTL_RECORD_SESSION") or None
    result = {
        "active": False,
        "shell": None,
        "mechanism": None,
        "shell_pid": None,
        "session": session,
        "inherited": False,
        "detail": "no shell hook in this shell (add `eval \"$(kubectl record init bash)\"` "
        "to ~/.bashrc or `eval \"$(kubectl record init zsh)\"` to ~/.zshrc)",
    }
    if not value:
        return result
    parts = value.split(":")
    shell = parts[0] or None
    mechanism = parts[1] if len(parts) > 1 and parts[1] else None
    shell_pid = None
    if len(parts) > 2 and parts[2].isdigit():
        shell_pid = int(parts[2])
    result.update(shell=shell, mechanism=mechanism, shell_pid=shell_pid)
    if environ.get("KUBECTL_RECORD_DISABLE") == "1":
        result["detail"] = f"{shell} hook loaded ({mechanism}) but KUBECTL_RECORD_DISABLE=1"
        return result
    parent = os.getppid() if ppid is None else ppid
    if shell_pid is None or _is_ancestor(shell_pid, parent):
        result["active"] = True
        result["detail"] = f"{shell} hook active ({mechanism})"
    else:
        result["inherited"] = True
        result["detail"] = (
            f"{shell} hook variables inherited from process {shell_pid}, "
            "but the shell that started this command did not load the hook"
        )
    return result


@click.command(name="init")
@click.argument("shell", metavar="bash|zsh")
def init_command(shell: str) -> None:
    """Print the shell hook: eval "$(kubectl record init bash)" in ~/.bashrc,
    eval "$(kubectl record init zsh)" in ~/.zshrc."""
    try:
        text = init_script(shell, sys.executable)
    except UnsupportedShell as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(text, nl=False)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m kubectl_record.hooks bash|zsh", file=sys.stderr)
        return 2
    try:
        sys.stdout.write(init_script(argv[0], sys.executable))
    except UnsupportedShell as e:
        print(f"kubectl-record: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
