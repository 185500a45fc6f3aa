"""Where kubectl-record keeps things.

Computed without platformdirs (the ingester starts after every kubectl run and must stay light);
tests/test_paths.py checks that the result equals platformdirs' on this platform. The spool rule
must match `__kr_spool_dir` in shell/record.bash.
"""

from __future__ import annotations

import os
import sys

APP = "kubectl-record"


def _xdg(var: str, default: str) -> str:
    value = os.environ.get(var, "")
    return value if os.path.isabs(value) else os.path.expanduser(default)


def home() -> str:
    """All persistent state: the database, config and outbox."""
    moved = os.environ.get("KUBECTL_RECORD_HOME")
    if moved:
        return os.path.abspath(moved)
    if sys.platform == "darwin":
        return os.path.expanduser(f"~/Library/Application Support/{APP}")
    return os.path.join(_xdg("XDG_DATA_HOME", "~/.local/share"), APP)


def config_dir() -> str:
    if os.environ.get("KUBECTL_RECORD_HOME"):
        return home()
    if sys.platform == "darwin":
        return os.path.expanduser(f"~/Library/Application Support/{APP}")
    return os.path.join(_xdg("XDG_CONFIG_HOME", "~/.config"), APP)


def config_file() -> str:
    return os.path.join(config_dir(), "config.toml")


def db_path() -> str:
    return os.path.join(home(), "records.db")


def spool_dir() -> str:
    """The short-lived spool of unmasked runs: memory-backed where the OS has one."""
    explicit = os.environ.get("KUBECTL_RECORD_RUNTIME_DIR")
    if explicit:
        return explicit
    uid = os.getuid()
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if xdg and os.path.isdir(xdg) and os.stat(xdg).st_uid == uid:
        base = os.path.join(xdg, APP)
    elif os.path.isdir("/dev/shm"):
        base = f"/dev/shm/{APP}-{uid}"
    else:
        base = os.path.join(os.environ.get("TMPDIR") or "/tmp", f"{APP}-{uid}")
    moved = os.environ.get("KUBECTL_RECORD_HOME")
    if moved:
        base = os.path.join(base, "h" + moved.replace("%", "%25").replace("/", "%2F"))
    return base


def ensure_private_dir(path: str) -> str:
    """Create PATH (and parents) as 0700 and tighten it if it already exists."""
    os.makedirs(path, mode=0o700, exist_ok=True)
    if os.stat(path).st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def shell_dir() -> str:
    """The shipped shell scripts: inside the installed package, or shell/ in a checkout."""
    packaged = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shell")
    if os.path.isdir(packaged):
        return packaged
    return os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "shell")
