"""Parsing bash and zsh history files for kubectl commands (kubectl_record.shell_history)."""

from __future__ import annotations

import os

import pytest

from kubectl_record import shell_history as sh


def cmds(text, aliases=None):
    return [argv for argv, _env, _unexp in sh.kubectl_commands(text, sh.parse_aliases(aliases))]


# --- file formats -------------------------------------------------------------------------------


def test_bash_history_with_timestamps_and_multiline_entries():
    data = (
        b"#1700000000\n"
        b"kubectl get po -n a\n"
        b"#1700000005\n"
        b"ls -la\n"
        b"#1700000010\n"
        b"for ns in a b; do\n"
        b"  kubectl get po -n $ns\n"
        b"done\n"
    )
    lines = sh.parse(data, "bash-history")
    assert [(l.started, l.argv, l.unexpanded, l.line_no) for l in lines] == [
        (1700000000.0, ["get", "po", "-n", "a"], False, 2),
        (1700000010.0, ["get", "po", "-n", "$ns"], True, 6),
    ]
    assert lines[0].duration_s is None
    assert lines[1].raw_line == "for ns in a b; do\n  kubectl get po -n $ns\ndone"


def test_bash_history_without_timestamps_has_no_time():
    data = b"kubectl get po\nls\nkubectl logs \\\n  web\n"
    lines = sh.parse(data, "bash-history")
    assert [(l.started, l.argv) for l in lines] == [(None, ["get", "po"]), (None, ["logs", "web"])]


def test_zsh_extended_history_multiline_and_metafied():
    # "é" is 0xc3 0xa9; zsh metafies bytes >= 0x83 only when they are special, here 0x83 0xa3
    # stands for 0x83 itself. Use a metafied byte in an argument.
    meta = b"kubectl get cm caf\xc3\x83\x89\n"  # 0x83 0x89 -> 0x89^0x20 = 0xa9 -> "café"
    data = (
        b": 1700000000:3;kubectl get po -n prod\n"
        b": 1700000010:0;echo hi\n"
        b": 1700000020:1;kubectl apply \\\\\n"
        b"-f x.yaml\n"
        b": 1700000025:0;for ns in a b; do\\\n"
        b"kubectl get po -n $ns\\\n"
        b"done\n"
        b": 1700000030:0;" + meta
    )
    lines = sh.parse(data, "zsh-history")
    assert [(l.started, l.duration_s, l.argv) for l in lines] == [
        (1700000000.0, 3.0, ["get", "po", "-n", "prod"]),
        (1700000020.0, 1.0, ["apply", "-f", "x.yaml"]),
        (1700000025.0, 0.0, ["get", "po", "-n", "$ns"]),
        (1700000030.0, 0.0, ["get", "cm", "café"]),
    ]
    assert lines[1].raw_line == "kubectl apply \\\n-f x.yaml"
    assert lines[2].raw_line == "for ns in a b; do\nkubectl get po -n $ns\ndone"


def test_zsh_plain_history_lines():
    lines = sh.parse(b"kubectl version\ncd /tmp\n", "zsh-history")
    assert [(l.started, l.argv) for l in lines] == [(None, ["version"])]


def test_unmetafy():
    assert sh.unmetafy(b"a\x83\xa3b") == b"a\x83b"
    assert sh.unmetafy(b"plain") == b"plain"


def test_default_history_files(tmp_path):
    env = {"HOME": str(tmp_path)}
    assert sh.default_history_file("bash-history", env) == str(tmp_path / ".bash_history")
    assert sh.default_history_file("zsh-history", env) == str(tmp_path / ".zsh_history")
    (tmp_path / "zd").mkdir()
    (tmp_path / "zd" / ".zsh_history").write_text("")
    assert sh.default_history_file("zsh-history", dict(env, ZDOTDIR=str(tmp_path / "zd"))) == str(
        tmp_path / "zd" / ".zsh_history"
    )
    assert sh.default_history_file("bash-history", dict(env, HISTFILE="/x/h")) == "/x/h"
    with pytest.raises(ValueError):
        sh.default_history_file("fish-history", env)


def test_read_history_defaults_to_the_shell_file(tmp_path):
    (tmp_path / ".bash_history").write_text("kubectl get ns\n")
    lines = sh.read_history("bash-history", environ={"HOME": str(tmp_path)})
    assert [l.argv for l in lines] == [["get", "ns"]]


# --- finding kubectl ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "line, expected",
    [
        ("kubectl get po", [["get", "po"]]),
        ("sudo kubectl get no", [["get", "no"]]),
        ("sudo -E -u root kubectl get no", [["get", "no"]]),
        ("command kubectl get po", [["get", "po"]]),
        ("\\kubectl get po", [["get", "po"]]),
        ("/usr/local/bin/kubectl version", [["version"]]),
        ("time kubectl get po", [["get", "po"]]),
        ("env KUBECONFIG=/x kubectl get po", [["get", "po"]]),
        ("watch -n 2 kubectl get po", [["get", "po"]]),
        ("kubectl get po | grep x && kubectl logs y", [["get", "po"], ["logs", "y"]]),
        ("kubectl get po -n nope || kubectl get ns; kubectl version", [["get", "po", "-n", "nope"], ["get", "ns"], ["version"]]),
        ("kubectl get po > out.txt 2>&1", [["get", "po"]]),
        ("kubectl get po -l 'app in (a,b)'", [["get", "po", "-l", "app in (a,b)"]]),
        ('kubectl exec -it x -- sh -c "echo \\$HOME"', [["exec", "-it", "x", "--", "sh", "-c", "echo $HOME"]]),
        ("kubectl get po # a comment", [["get", "po"]]),
        ("echo kubectl get po", []),
        ("kubectlx get po", []),
        ("kubectl record history", []),
        ("kubectl record -- get po", [["get", "po"]]),
        ("kubectl-record -- get po -n x", [["get", "po", "-n", "x"]]),
        ("/opt/bin/kubectl-record history", []),
        ("minikube kubectl -- get po -A", [["get", "po", "-A"]]),
        ("minikube -p dev kubectl -- exec x -- sh", [["exec", "x", "--", "sh"]]),
        ("minikube kubectl --ssh -- get po", [["get", "po"]]),
        ("minikube kubectl get po", [["get", "po"]]),
        ("minikube ssh -- kubectl get po", []),
        ("minikube start", []),
        ("k3s kubectl exec x -- sh", [["exec", "x", "--", "sh"]]),
        ("sudo microk8s kubectl get no", [["get", "no"]]),
        ("microk8s.kubectl get no", [["get", "no"]]),
        ("ls | grep kubectl", []),
    ],
)
def test_kubectl_detection(line, expected):
    assert cmds(line) == expected


def test_aliases():
    assert cmds("k get po", ["k"]) == [["get", "po"]]
    assert cmds("kgp -w", ["kgp=kubectl get pods"]) == [["get", "pods", "-w"]]
    assert cmds("k get po") == []


def test_env_prefixes_are_kept_apart():
    [(argv, env, unexpanded)] = sh.kubectl_commands("KUBECONFIG=/tmp/kc NS=x kubectl get po")
    assert argv == ["get", "po"] and env == [("KUBECONFIG", "/tmp/kc"), ("NS", "x")]
    assert unexpanded is False


@pytest.mark.parametrize(
    "line, argv",
    [
        ("kubectl get po -n $NS", ["get", "po", "-n", "$NS"]),
        ("kubectl get po -n ${NS}", ["get", "po", "-n", "${NS}"]),
        ('kubectl get po -n "$NS-x"', ["get", "po", "-n", "$NS-x"]),
        ("kubectl logs $(kubectl get po -o name | head -1)", ["logs", "$(kubectl get po -o name | head -1)"]),
        ("kubectl logs `cat name`", ["logs", "`cat name`"]),
        ("kubectl apply -f *.yaml", ["apply", "-f", "*.yaml"]),
        ("kubectl apply -f ~/x.yaml", ["apply", "-f", "~/x.yaml"]),
    ],
)
def test_unexpanded_parts_stay_as_typed_and_are_marked(line, argv):
    found = sh.kubectl_commands(line)
    assert found[0][0] == argv
    assert found[0][2] is True


def test_quoted_dollar_is_not_unexpanded():
    [(argv, _env, unexpanded)] = sh.kubectl_commands("kubectl get po -l 'a=$b'")
    assert argv == ["get", "po", "-l", "a=$b"] and unexpanded is False


def test_command_substitution_inside_is_found_too():
    assert cmds("kubectl delete po $(kubectl get po -o name)") == [
        ["delete", "po", "$(kubectl get po -o name)"],
        ["get", "po", "-o", "name"],
    ]
    assert cmds('x="$(kubectl get ns)"') == [["get", "ns"]]


def test_nothing_is_ever_evaluated(tmp_path):
    marker = tmp_path / "pwned"
    line = f"kubectl get po $(touch {marker}) `touch {marker}` '$(touch {marker})'"
    sh.parse(line.encode() + b"\n", "bash-history")
    sh.parse(b": 1700000000:0;" + line.encode() + b"\n", "zsh-history")
    assert not marker.exists()


def test_heredoc_body_is_not_a_command():
    data = b"kubectl apply -f - <<EOF\nkind: Secret\nkubectl get po\nEOF\n"
    # Without timestamps each line is an entry: the body line `kubectl get po` cannot be told
    # apart from a typed one; with timestamps it belongs to its entry.
    ts = b"#1700000000\n" + data
    assert [l.argv for l in sh.parse(ts, "bash-history")] == [["apply", "-f", "-"]]


def test_keys_are_stable_and_distinct():
    data = b"#1700000000\nkubectl get po\n#1700000001\nkubectl get po\n#1700000001\nkubectl get po\n"
    a = sh.parse(data, "bash-history")
    b = sh.parse(data, "bash-history")
    assert [l.key for l in a] == [l.key for l in b]
    assert len({l.key for l in a}) == 3
    # A grown file keeps the keys of what was there before.
    grown = sh.parse(data + b"#1700000002\nkubectl get ns\n", "bash-history")
    assert [l.key for l in grown][:3] == [l.key for l in a]
    # Two kubectl commands on one line have distinct keys.
    two = sh.parse(b"#1700000000\nkubectl get po | grep x && kubectl logs y\n", "bash-history")
    assert len({l.key for l in two}) == 2 and [l.part for l in two] == [0, 1]


def test_unknown_format():
    with pytest.raises(ValueError):
        sh.read_history("fish-history", os.devnull)
