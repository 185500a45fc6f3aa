"""`kubectl record config`: one TOML file, known keys only, tokens never shown."""

from __future__ import annotations

import tomllib

from click.testing import CliRunner

from kubectl_record.cli import cli


def run(*args, env=None):
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def test_set_get_list_and_unset_round_trip(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECTL_RECORD_HOME", str(tmp_path))
    assert run("config", "set", "collector.url", "https://collector.example:8443").exit_code == 0
    assert run("config", "set", "sync.auto", "yes").exit_code == 0
    assert run("config", "set", "destinations.urls", "loki://127.0.0.1:3100, otlp://127.0.0.1:4318").exit_code == 0
    with open(tmp_path / "config.toml", "rb") as f:
        assert tomllib.load(f) == {
            "collector": {"url": "https://collector.example:8443"},
            "sync": {"auto": True},
            "destinations": {"urls": ["loki://127.0.0.1:3100", "otlp://127.0.0.1:4318"]},
        }
    assert (tmp_path / "config.toml").stat().st_mode & 0o777 == 0o600
    assert run("config", "get", "collector.url").output == "https://collector.example:8443\n"
    assert run("config", "get", "destinations.urls").output == "loki://127.0.0.1:3100,otlp://127.0.0.1:4318\n"
    assert run("config", "set", "sync.auto", "--unset").exit_code == 0
    result = run("config", "get", "sync.auto")
    assert result.exit_code == 1 and "not set" in result.output


def test_environment_overrides_the_file_and_tokens_are_never_printed(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECTL_RECORD_HOME", str(tmp_path))
    run("config", "set", "collector.token", "krt_file_token_value")
    assert run("config", "get", "collector.token").output == "***\n"
    listing = run("config").output
    assert "krt_file_token_value" not in listing and "collector.token = ***" in listing
    monkeypatch.setenv("KUBECTL_RECORD_COLLECTOR", "https://from-env:1")
    assert run("config", "get", "collector.url").output == "https://from-env:1\n"


def test_unknown_keys_and_bad_values_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECTL_RECORD_HOME", str(tmp_path))
    for args in (("config", "set", "colector.url", "x"), ("config", "set", "sync.auto", "maybe"),
                 ("config", "get", "nope")):
        result = run(*args)
        assert result.exit_code == 2 and len(result.output.strip().splitlines()) >= 1
    assert not (tmp_path / "config.toml").exists()


def test_exact_mode_is_baked_into_init_and_the_shim_as_a_default_the_environment_overrides(tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECTL_RECORD_HOME", str(tmp_path))
    monkeypatch.setenv("PATH", "/usr/bin:/bin")  # no launcher of this installation to rewrite
    run("shim", "install")
    result = run("config", "set", "audit.exact", "true")
    assert f"rewrote {tmp_path / 'shim' / 'kubectl'}" in result.output
    baked = ": ${KUBECTL_RECORD_AUDIT_MARKER=1}"
    assert baked in (tmp_path / "shim" / "kubectl").read_text()
    assert baked in run("init", "bash").output and baked in run("init", "zsh").output
    run("config", "set", "audit.exact", "false")
    assert ": ${KUBECTL_RECORD_AUDIT_MARKER=0}" in run("init", "zsh").output
    # A settings file that cannot be read bakes nothing, and the hook still loads.
    (tmp_path / "config.toml").write_text("audit = [")
    text = run("init", "bash").output
    assert ": ${KUBECTL_RECORD_AUDIT_MARKER" not in text and "__kr_run" in text
