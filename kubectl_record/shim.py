"""Writing the small bash programs that run on every kubectl invocation.

They bake in absolute paths (bash, this Python, the shipped record.bash) so that at run time
nothing is looked up and no Python starts before kubectl. Re-run `install.sh` or
`kubectl record shim install` after moving the installation.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys

from . import paths, settings

SHIM_MARKER = ".kubectl-record-shim"


class ShimError(Exception):
    """The shim or launcher could not be written; the message says why in one line."""


def find_bash() -> str:
    """A bash ≥ 4 (the hot path needs BASHPID, mapfile and `exec -a`); macOS's /bin/bash is 3.2."""
    candidates = [shutil.which("bash"), "/opt/homebrew/bin/bash", "/usr/local/bin/bash", "/bin/bash"]
    for path in candidates:
        if path and os.access(path, os.X_OK):
            return path
    raise ShimError("no bash found: the recording shims need bash 4 or newer")


def _record_lib() -> str:
    lib = os.path.join(paths.shell_dir(), "record.bash")
    if not os.path.isfile(lib):
        raise ShimError(f"shipped shell library missing: {lib}")
    return lib


def _write_executable(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, path)


def shim_script(python: str | None = None) -> str:
    q = shlex.quote
    lib = _record_lib()
    baked = "".join(line + "\n" for line in settings.shell_defaults())
    return f"""#!{find_bash()}
# kubectl-record shim: records this kubectl run, then runs the real kubectl.
# Made by `kubectl record shim install`; KUBECTL_RECORD_DISABLE=1 turns recording off.
__KR_PYTHON={q(python or sys.executable)}
{baked}if ! . {q(lib)} 2>/dev/null; then
    # kubectl-record was removed: still be kubectl, found on PATH without this directory.
    d=${{BASH_SOURCE[0]%/*}}
    PATH=:$PATH:
    PATH=${{PATH//:$d:/:}}
    PATH=${{PATH#:}}
    exec kubectl "$@"
fi
__kr_run shim "$@"
"""


def install_shim(directory: str | None = None, python: str | None = None) -> str:
    """Create DIRECTORY/kubectl (a recording shim) and return the directory."""
    directory = os.path.abspath(directory or os.path.join(paths.home(), "shim"))
    try:
        os.makedirs(directory, exist_ok=True)
        existing = os.path.join(directory, "kubectl")
        if os.path.exists(existing) and not os.path.exists(os.path.join(directory, SHIM_MARKER)):
            with open(existing, "rb") as f:
                head = f.read(200)
            if b"# kubectl-record shim" not in head:
                raise ShimError(f"{existing} exists and is not a kubectl-record shim; choose another --dir")
        _write_executable(existing, shim_script(python))
        with open(os.path.join(directory, SHIM_MARKER), "w") as f:
            f.write("This directory holds kubectl-record's recording shim for kubectl.\n")
    except OSError as exc:
        raise ShimError(f"cannot write the shim into {directory}: {exc.strerror}") from exc
    return directory


def launcher_script(python: str | None = None) -> str:
    """`kubectl-record`: `-- ARGS` records with bash alone; anything else is the Python CLI."""
    q = shlex.quote
    python = python or sys.executable
    baked = "".join(f"    {line}\n" for line in settings.shell_defaults())
    return f"""#!{find_bash()}
# kubectl-record launcher, written by install.sh: `kubectl-record -- ARGS` records kubectl ARGS.
if [[ ${{1-}} == -- ]]; then
    __KR_PYTHON={q(python)}
{baked}    . {q(_record_lib())} && __kr_run wrapper "${{@:2}}"
fi
exec {q(python)} -I -m kubectl_record "$@"
"""


def completion_launcher_script(python: str | None = None) -> str:
    q = shlex.quote
    return f"""#!{find_bash()}
# kubectl-record completion for `kubectl record <TAB>` (kubectl >= 1.26), written by install.sh.
exec {q(python or sys.executable)} -I -m kubectl_record.completion "$@"
"""


def write_launchers(bindir: str, python: str | None = None) -> list[str]:
    os.makedirs(bindir, exist_ok=True)
    written = []
    for name, text in (("kubectl-record", launcher_script(python)),
                       ("kubectl_complete-record", completion_launcher_script(python))):
        path = os.path.join(bindir, name)
        _write_executable(path, text)
        written.append(path)
    return written


def refresh_baked() -> list[str]:
    """Rewrite the shim in the default directory and the launchers found on PATH, so that baked
    settings take effect; returns what was rewritten. A shim installed elsewhere (--dir) keeps
    its settings until `shim install --dir` runs again."""
    done = []
    default = os.path.join(paths.home(), "shim")
    if os.path.exists(os.path.join(default, SHIM_MARKER)):
        done.append(os.path.join(install_shim(default), "kubectl"))
    launcher = shutil.which("kubectl-record")
    if launcher:
        with open(launcher, "rb") as f:
            head = f.read(2000)
        # Only this installation's launchers (they name this Python), never another's.
        if b"# kubectl-record launcher, written by install.sh" in head and shlex.quote(sys.executable).encode() in head:
            done += write_launchers(os.path.dirname(launcher))
    return done

