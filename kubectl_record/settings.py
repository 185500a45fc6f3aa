"""Settings: one TOML file in the config directory, read by the CLI and the ingester, never by
the hot paths (`init` and `shim install` bake in what those need; environment variables win).

Keys are dotted (`collector.url`); each known key has a type and a one-line meaning, so a typo
or a bad value is refused at `config set` instead of being silently ignored later.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass

import click

from . import paths

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - exercised on older Pythons only
    import tomli as tomllib


class SettingsError(ValueError):
    """A setting cannot be read or written; the message says why in one line."""


@dataclass(frozen=True)
class Key:
    type: type
    help: str
    env: str | None = None
    baked: str | None = None  # the hot path's variable: `init`, `shim install` and install.sh write it in


KEYS: dict[str, Key] = {
    "collector.url": Key(str, "the team collector's URL", "KUBECTL_RECORD_COLLECTOR"),
    "collector.token": Key(str, "this user's collector token", "KUBECTL_RECORD_TOKEN"),
    "collector.ca_bundle": Key(str, "CA bundle to verify the collector's certificate"),
    "sync.auto": Key(bool, "upload in the background after ingestion"),
    "destinations.urls": Key(list, "extra destinations for push (opensearch://, loki://, otlp://, webhook+https://)"),
    "retention.max_age": Key(str, "delete records older than this, checked once a day, e.g. 365d",
                             "KUBECTL_RECORD_RETENTION"),
    "retention.max_records": Key(int, "keep at most this many records, checked once a day"),
    "audit.exact": Key(bool, "start kubectl with a per-run marker as argv[0] for exact audit correlation",
                       baked="KUBECTL_RECORD_AUDIT_MARKER"),
    "record.ignore": Key(list, "runs not to record: glob patterns matched against the arguments joined by "
                         "spaces, e.g. 'get secret*'", baked="KUBECTL_RECORD_IGNORE"),
}


def shell_defaults(values: dict | None = None) -> list[str]:
    """Shell lines giving the hot path its baked settings as defaults: a variable already in the
    environment still wins. An unreadable settings file bakes nothing (doctor reports it)."""
    if values is None:
        try:
            values = load()
        except SettingsError:
            values = {}
    lines = []
    for key, spec in KEYS.items():
        if spec.baked and key in values:
            value = values[key]
            if isinstance(value, bool):
                text = "1" if value else "0"
            elif isinstance(value, list):
                text = "|".join(map(str, value))  # the hot path's separator (__kr_ignored)
            else:
                text = str(value)
            lines.append(f": ${{{spec.baked}={shlex.quote(text)}}}")
    return lines


def _read(path: str) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SettingsError(f"cannot read settings {path}: {exc}") from exc


def _flatten(data: dict, prefix: str = "") -> dict:
    flat = {}
    for name, value in data.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict):
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def load(path: str | None = None, environ=None) -> dict:
    """All settings as a flat {dotted key: value}, environment overrides applied."""
    environ = os.environ if environ is None else environ
    values = _flatten(_read(path or paths.config_file()))
    for key, spec in KEYS.items():
        if spec.env and environ.get(spec.env):
            values[key] = environ[spec.env]
    return values


def get(key: str, default=None):
    return load().get(key, default)


def parse_value(key: str, text: str):
    spec = KEYS.get(key)
    if spec is None:
        raise SettingsError(f"unknown setting {key!r} (known: {', '.join(sorted(KEYS))})")
    if spec.type is bool:
        low = text.strip().lower()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        raise SettingsError(f"{key} takes true or false, not {text!r}")
    if spec.type is list:
        return [item.strip() for item in text.split(",") if item.strip()]
    if spec.type is int:
        try:
            return int(text)
        except ValueError:
            raise SettingsError(f"{key} takes a whole number, not {text!r}") from None
    return text


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{text}"'


def dump(flat: dict) -> str:
    tables: dict[str, dict] = {}
    for key, value in sorted(flat.items()):
        table, _, name = key.rpartition(".")
        tables.setdefault(table, {})[name] = value
    out = []
    for table, values in tables.items():
        if table:
            out.append(f"\n[{table}]")
        out.extend(f"{name} = {_toml_value(v)}" for name, v in values.items())
    return "\n".join(out).lstrip("\n") + "\n"


def set_value(key: str, text: str | None, path: str | None = None) -> None:
    """Set KEY from its text form, or remove it when TEXT is None."""
    path = path or paths.config_file()
    flat = _flatten(_read(path))
    if text is None:
        flat.pop(key, None)
    else:
        flat[key] = parse_value(key, text)
    paths.ensure_private_dir(os.path.dirname(path))
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as f:
        f.write(dump(flat))
    os.replace(tmp, path)


def _shown(key: str, value) -> str:
    # Tokens are credentials: say that one is set, never what it is.
    if key.endswith("token") and value:
        return "***"
    return _toml_value(value)


@click.group(invoke_without_command=True)
@click.pass_context
def config(ctx: click.Context) -> None:
    """Show settings, or get/set one (stored in one TOML file in the config directory)."""
    if ctx.invoked_subcommand:
        return
    try:
        values = load()
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"# {paths.config_file()}")
    for key in sorted(KEYS):
        mark = "" if key in values else "# "
        value = _shown(key, values[key]) if key in values else "(unset)"
        click.echo(f"{mark}{key} = {value}    # {KEYS[key].help}")


@config.command("get")
@click.argument("key")
def config_get(key: str) -> None:
    """Print one setting's value (exit 1 when unset)."""
    if key not in KEYS:
        raise click.UsageError(f"unknown setting {key!r}")
    value = load().get(key)
    if value is None:
        raise click.ClickException(f"{key} is not set")
    if key.endswith("token"):
        value = "***"
    click.echo(",".join(value) if isinstance(value, list) else value)


@config.command("set")
@click.argument("key")
@click.argument("value", required=False)
@click.option("--unset", is_flag=True, help="Remove the setting.")
def config_set(key: str, value: str | None, unset: bool) -> None:
    """Set KEY to VALUE (lists comma-separated), or remove it with --unset."""
    if value is None and not unset:
        raise click.UsageError("give a VALUE, or --unset")
    try:
        set_value(key, None if unset else value)
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc
    if KEYS[key].baked:
        from .shim import ShimError, refresh_baked

        try:
            for path in refresh_baked():
                click.echo(f"# rewrote {path}", err=True)
        except (ShimError, OSError) as exc:
            raise click.ClickException(f"{key} is set, but {exc}") from exc
        click.echo(f"# {key} takes effect in new shells (or export {KEYS[key].baked} in this one)", err=True)
