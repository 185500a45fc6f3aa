"""Completion: the engine, kubectl's plugin completion (real kubectl ≥ 1.26), bash and zsh scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from kubectl_record import completion
from tests.conftest import REPO, real_kubectl, require
from tests.recordfactory import make_record, st  # noqa: F401 (fixture)


def _fill(st):
    st.add(make_record("get pods", context="prod-eu", namespace="payments", verb="get", resource="pods"),
           make_record("delete deploy web", context="prod-us", namespace="kube-system", verb="delete",
                       resource="deployments"),
           make_record("rollout restart deploy api", context="dev", namespace="team", verb="rollout restart",
                       resource="deployments"))


def _values(args):
    candidates, directive = completion.complete(args)
    return [c.split("\t")[0] for c in candidates], directive


def test_subcommands_and_flags(st):
    names, directive = _values([""])
    assert {"history", "show", "stats", "export", "import", "delete", "prune"} <= set(names)
    assert directive & completion.NO_FILE
    assert _values(["hi"])[0] == ["history"]
    flags, _ = _values(["history", "--"])
    assert {"--context", "--namespace", "--verb", "--resource", "--since", "--failed", "--unique", "--output"} <= set(flags)
    assert _values(["history", "--res"])[0] == ["--resource"]
    assert "--older-than" in _values(["prune", "--o"])[0]


def test_values_from_records(st):
    _fill(st)
    assert _values(["history", "--context", ""])[0] == ["dev", "prod-eu", "prod-us"]
    assert _values(["history", "--context", "prod-"])[0] == ["prod-eu", "prod-us"]
    assert _values(["stats", "-n", "k"])[0] == ["kube-system"]
    assert _values(["history", "--namespace", ""])[0] == ["kube-system", "payments", "team"]
    assert _values(["history", "--verb", "r"])[0] == ["rollout restart"]
    assert _values(["export", "--resource", ""])[0] == ["deployments", "pods"]
    assert _values(["history", "--context=prod-e"])[0] == ["--context=prod-eu"]
    assert _values(["history", "-o", "j"])[0] == ["json", "jsonl"]
    assert "wrapper" in _values(["history", "--source", ""])[0]
    ids, directive = _values(["show", ""])
    assert len(ids) == 3 and all(len(i) == 8 for i in ids) and directive & completion.KEEP_ORDER
    assert _values(["import", "--format", "b"])[0] == ["bash-history"]
    assert _values(["import", ""])[1] == completion.DEFAULT  # files


def test_no_store_no_values(st, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECTL_RECORD_HOME", str(tmp_path / "empty"))
    assert _values(["history", "--context", ""])[0] == []


def test_distinct_values_is_a_skip_scan(st):
    st.add(*[make_record("get pods", context=f"c{i % 7}") for i in range(200)])
    assert completion.distinct_values(st.conn, "context", "") == [f"c{i}" for i in range(7)]
    assert completion.distinct_values(st.conn, "context", "c3") == ["c3"]


def _bin(tmp_path):
    d = tmp_path / "bin"
    d.mkdir(exist_ok=True)
    for name, module in (("kubectl_complete-record", "kubectl_record.completion"), ("kubectl-record", "kubectl_record")):
        path = d / name
        path.write_text(f"#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m {module} \"$@\"\n")
        path.chmod(0o755)
    return d


def test_kubectl_plugin_completion_with_real_kubectl(st, tmp_path):
    kubectl = real_kubectl()
    _fill(st)
    env = dict(os.environ, PATH=f"{_bin(tmp_path)}:{os.environ['PATH']}", HOME=str(tmp_path))
    out = subprocess.run([kubectl, "__complete", "record", ""], env=env, capture_output=True, text=True, timeout=60)
    lines = out.stdout.splitlines()
    require("kubectl plugin completion (kubectl >= 1.26)", any(line.startswith("history\t") for line in lines),
            out.stderr)
    assert lines[-1] == ":4"
    out = subprocess.run([kubectl, "__complete", "record", "history", "--context", "prod-"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.splitlines() == ["prod-eu", "prod-us", ":4"]


def test_main_prints_cobra_protocol(capsys, st):
    _fill(st)
    completion.main(["history", "--verb", "del"])
    assert capsys.readouterr().out == "delete\n:4\n"
    completion.main(["__complete", "sta"])
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("stats\t") and out[-1] == ":4"


def test_bash_script(st, tmp_path):
    bash = shutil.which("bash")
    require("bash", bash is not None)
    _fill(st)
    script = tmp_path / "comp.bash"
    script.write_text(completion.script("bash"))
    env = dict(os.environ, PATH=f"{_bin(tmp_path)}:{os.environ['PATH']}")
    probe = (f'source {script}; COMP_WORDS=(kubectl-record history --context prod-); COMP_CWORD=3; '
             '_kubectl_record_complete; printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run([bash, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["prod-eu", "prod-us"], out.stderr
    probe = (f'source {script}; COMP_WORDS=(kubectl-record st); COMP_CWORD=1; '
             '_kubectl_record_complete; printf "%s\\n" "${COMPREPLY[@]}"')
    out = subprocess.run([bash, "-c", probe], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["stats"], out.stderr


def test_zsh_script_parses(tmp_path):
    zsh = shutil.which("zsh")
    if zsh is None:
        pytest.skip("zsh not installed")
    script = tmp_path / "_kubectl-record"
    script.write_text(completion.script("zsh"))
    out = subprocess.run([zsh, "-n", str(script)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr


def test_completion_command_prints_scripts():
    from click.testing import CliRunner

    result = CliRunner().invoke(completion.completion, ["bash"])
    assert result.exit_code == 0 and "complete -o default -F _kubectl_record_complete kubectl-record" in result.output
    result = CliRunner().invoke(completion.completion, ["zsh"])
    assert result.exit_code == 0 and result.output.startswith("#compdef kubectl-record")


def test_script_through_the_completer_executable(tmp_path):
    env = dict(os.environ, KUBECTL_RECORD_COMPLETION_SCRIPT="bash")
    out = subprocess.run([str(_bin(tmp_path) / "kubectl_complete-record")], env=env, capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout == completion.script("bash")
