"""export / import: exact round trip, idempotence, masking re-applied, bad input, shell history."""

from __future__ import annotations

import json
import shlex

import pytest

from kubectl_record import transfer
from tests.recordfactory import Store, make_record, st  # noqa: F401 (fixture)


def _sample():
    return [
        make_record("get pods -n payments", namespace="payments", ago=500),
        make_record(["apply", "-f", "https://example.com/x.yaml"], files=["https://example.com/x.yaml"], resource=None,
                    mutating=True, exit_code=1, ci={"system": "gitlab", "job": "deploy"}, ago=400),
        make_record("logs web-42 -n web", names=["web-42"], exit_code=None, state="unfinished", ended_at=None,
                    duration_ms=None, ago=300),
        make_record("get pods", audit={"status": "strong", "events": [{"audit_id": "a", "verb": "list"}]},
                    identity="alice", impersonate={"user": "bob"}, ago=200),
        make_record(["get", "cm", "naïve-ünïcode", "quote\"d"], resource="configmaps", ago=100),
    ]


def test_export_import_round_trip_is_exact(st, tmp_path, monkeypatch):
    st.add(*_sample())
    st.add_foreign(make_record("get nodes", install_id="other-install", seq=7, prev_hash="p" * 64, hash="h" * 64,
                               ago=250))
    exported = st.run("export")
    assert exported.exit_code == 0, exported.output
    lines = exported.stdout.splitlines()
    assert len(lines) == 6
    before = st.json("history")
    path = tmp_path / "export.jsonl"
    path.write_text(exported.stdout)

    other = Store(tmp_path / "b", monkeypatch)
    result = other.run("import", str(path))
    assert result.exit_code == 0, result.output
    assert "imported 6 new record(s) of 6 read" in result.stderr
    assert other.json("history") == before  # every field: install_id, seq, hashes, audit …
    assert other.run("export").stdout == exported.stdout
    again = other.run("import", str(path))
    assert again.exit_code == 0 and "imported 0 new record(s)" in again.stderr
    assert len(other.json("history")) == 6
    # export lines are the -o jsonl records
    assert [json.loads(x) for x in lines] == list(reversed(before))


def test_export_filters_and_formats(st):
    st.add(*_sample())
    out = st.run("export", "--failed").stdout.splitlines()
    assert len(out) == 1 and json.loads(out[0])["exit_code"] == 1
    assert len(json.loads(st.run("export", "-o", "json").stdout)) == 5
    assert len(st.run("export", "--limit", "2").stdout.splitlines()) == 2


def test_import_reapplies_masking(st, tmp_path):
    raw = make_record(["create", "secret", "generic", "db", "--from-literal=password=hunter2"],
                      verb="create secret generic", resource="secrets", names=["db"],
                      server="https://admin:s3cr3tpass@k8s.example.com:6443", cwd="/home/u", redacted=False)
    raw["command"] = "kubectl create secret generic db --from-literal=password=hunter2"
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(raw) + "\n")
    result = st.run("import", str(path))
    assert result.exit_code == 0, result.output
    [rec] = st.json("history")
    text = json.dumps(rec)
    assert "hunter2" not in text and "s3cr3tpass" not in text
    assert rec["argv"][-1] != "--from-literal=password=hunter2"
    assert rec["command"] == "kubectl " + " ".join(shlex.quote(a) for a in rec["argv"])
    assert rec["redacted"] is True
    assert rec["install_id"] == transfer.FOREIGN_INSTALL


def test_import_bad_line_is_exit_2_and_changes_nothing(st, tmp_path):
    good = make_record("get pods")
    path = tmp_path / "in.jsonl"
    path.write_text(json.dumps(good) + "\n" + "{not json\n")
    result = st.run("import", str(path))
    assert result.exit_code == 2
    assert f"{path}:2:" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert st.ids() == set()
    for bad in ({"id": "x"}, {"id": "x", "started_at": "yesterday", "argv": []},
                {"id": 5, "started_at": "2026-01-01T00:00:00.000Z", "argv": []},
                {"id": "x", "started_at": "2026-01-01T00:00:00.000Z", "argv": "get pods"},
                {"id": "x", "started_at": "2026-01-01T00:00:00.000Z", "argv": ["get", 5]},
                {"id": "x", "started_at": "2026-01-01T00:00:00.000Z", "argv": [], "exit_code": "1"}, [1, 2]):
        path.write_text(json.dumps(bad) + "\n")
        result = st.run("import", str(path))
        assert result.exit_code == 2, (bad, result.output)
    assert st.run("import", str(tmp_path / "missing.jsonl")).exit_code == 2
    assert st.run("import").exit_code == 2


def test_import_accepts_foreign_shapes(st, tmp_path):
    path = tmp_path / "in.jsonl"
    path.write_text("\n".join([
        json.dumps({"id": "elsewhere-1", "started_at": "2026-01-01T10:00:00+01:00", "command": "kubectl get pods -A"}),
        "",
        json.dumps({"id": "elsewhere-2", "started_at": "2026-01-01T10:00:00Z", "argv": ["get", "svc"], "extra": 1}),
    ]) + "\n")
    result = st.run("import", str(path))
    assert result.exit_code == 0, result.output
    recs = {r["id"]: r for r in st.json("history")}
    assert recs["elsewhere-1"]["started_at"] == "2026-01-01T09:00:00.000Z"
    assert recs["elsewhere-1"]["argv"] == ["get", "pods", "-A"]
    assert recs["elsewhere-1"]["state"] == "imported" and recs["elsewhere-1"]["source"] == "import"
    assert "extra" not in recs["elsewhere-2"]


def test_import_from_stdin_subprocess(st, tmp_path):
    st.add(*_sample())
    exported = st.subprocess("export").stdout
    st.conn.execute("DELETE FROM records")
    proc = st.subprocess("import", "-", input=exported)
    assert proc.returncode == 0, proc.stderr
    assert len(st.ids()) == 5
    assert st.subprocess("export").stdout == exported


CRAFTED = [
    ["get", "pods"], ["get", "secret", "x", "-o", "yaml"], ["logs", "web-1", "--tail", "100"],
    ["get", "pods", "--token", "abc"], ["get", "pods", "--token=abc"], ["config", "set", "users.x.token", "abc"],
    ["create", "secret", "generic", "x", "--from-literal=a=b"], ["exec", "p", "--", "sh"],
    ["exec", "p", "--", "mysql", "-psecret"], ["exec", "p", "--", "env", "PASSWORD=x"],
    ["get", "pods", "abcdef.0123456789abcdef"], ["get", "pods", "glpat-abcdefghijklmnopqrst"],
    ["get", "pods", "xoxb-1234567890-abc"], ["apply", "-f", "https://u:p@host/x.yaml"],
    ["apply", "-f", "k8s/web/deploy.yaml"], ["get", "pods", "-l", "token=abc"], ["get", "pods", "ghp_" + "a" * 36],
    ["get", "pods", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"], ["describe", "AKIAABCDEFGHIJKLMNOP"],
    ["get", "--kubeconfig", "/tmp/x", "pods"], ["delete", "pod", "x", "--as", "admin"],
    ["get", "pods", "--password", "hunter2"], ["get", "pods", "--client-key", "/k"], ["exec", "p", "--", "bash"],
    ["config", "use-context", "prod"], ["config", "set-credentials", "u", "--token", "abc"],
    ["port-forward", "x", "8080:80"], ["create", "-f", "x.yaml"], ["create", "secret", "tls", "x", "--key", "k"],
    ["config", "view", "--raw"], ["exec", "p", "--", "sh", "-c", "echo hunter2"],
]


def test_fast_screen_agrees_with_mask_argv():
    from kubectl_record import redact

    from bench.gen_records import generate

    argvs = CRAFTED + [r["argv"] for r in generate(3000, seed=3)]
    screened = 0
    for argv in argvs:
        if transfer.plainly_unmaskable(argv):
            screened += 1
            assert redact.mask_argv(list(argv)) == (argv, False), argv
        for word in argv:
            if transfer._plain_word(word):
                assert redact.mask_text(word) == (word, False), word
    assert screened > 1000


def test_shell_history_import(st, tmp_path, monkeypatch):
    pytest.importorskip("kubectl_record.shell_history")
    home = tmp_path / "home"
    (home / ".kube").mkdir(parents=True)
    (home / ".kube" / "config").write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: c\n  cluster: {server: 'https://c:6443'}\n"
        "contexts:\n- name: dev\n  context: {cluster: c, user: u, namespace: team}\nusers:\n- name: u\n  user: {token: t}\n")
    monkeypatch.setenv("HOME", str(home))
    hist = tmp_path / "bash_history"
    hist.write_text("#1764000000\nkubectl get pods -n kube-system\n#1764000100\nls -la\n"
                    "#1764000200\nk delete deploy web --context dev\n"
                    "#1764000300\nkubectl create secret generic db --from-literal=password=hunter2\n"
                    "#1764000400\nkubectl get pods -n $NS\n")
    result = st.run("import", "--format", "bash-history", "--alias", "k", str(hist))
    assert result.exit_code == 0, result.output
    recs = st.json("history", "--reverse")
    assert [r["argv"][0] for r in recs] == ["get", "delete", "create", "get"]
    for r in recs:
        assert r["source"] == "import" and r["state"] == "imported" and r["exit_code"] is None
        assert r["seq"] is not None and r["hash"]
    assert recs[0]["started_at"] == "2025-11-24T16:00:00.000Z"
    assert "hunter2" not in json.dumps(recs) and recs[2]["redacted"] is True
    assert recs[3]["unexpanded"] is True
    again = st.run("import", "--format", "bash-history", "--alias", "k", str(hist))
    assert again.exit_code == 0 and "imported 0 new" in again.stderr
    assert len(st.json("history")) == 4
    assert st.run("import", "--format", "bash-history", str(tmp_path / "nope")).exit_code == 2
    assert st.run("import", "--alias", "k", str(hist)).exit_code == 2  # --alias needs a history format


def test_history_of_a_shell_with_the_hook_adds_only_what_the_recorder_missed(st, tmp_path):
    from kubectl_record.record import Run, build

    def hooked(argv: list[str], started: float, source: str = "hook") -> dict:
        return build(Run(id=f"{source}-{started}", source=source, argv=argv, started=started, ended=started + 1,
                         exit_code=0))

    secret = ["create", "secret", "generic", "db", "--from-literal=password=hunter2"]
    st.add(hooked(["get", "pods"], 1764000000.4), hooked(secret, 1764000301.0, "shim"),
           hooked(["get", "pods"], 1764000620.0))  # the last one ran long after its line: still that line's
    hist = tmp_path / "bash_history"
    hist.write_text("#1764000000\nkubectl get pods\n"             # recorded by the hook as it ran
                    "#1764000300\nkubectl " + " ".join(secret) + "\n"  # by the shim (compared masked)
                    "#1764000400\nkubectl get pods\n"             # typed again, recorded later…
                    "#1764000500\nkubectl get pods\n"             # …and this one the recorder missed
                    "#1764000600\nkubectl get nodes\n")           # as this one
    result = st.run("import", "--format", "bash-history", str(hist))
    assert result.exit_code == 0 and "imported 2 new" in result.stderr, result.stderr
    imported = [(r["argv"], r["started_at"]) for r in st.json("history", "--reverse") if r["source"] == "import"]
    assert imported == [(["get", "pods"], "2025-11-24T16:08:20.000Z"), (["get", "nodes"], "2025-11-24T16:10:00.000Z")]


def test_staged_import_equals_the_python_path(st, tmp_path):
    """Lines taken apart by SQLite store exactly what normalize + Masker + to_row would."""
    from bench.gen_records import generate

    from kubectl_record import store

    recs = list(generate(400, seed=11))
    recs[5]["argv"] = ["get", "pods", "--token", "abc"]
    recs[6]["server"] = "https://u:secretpass@h:6443"
    recs[7]["names"] = ["ghp_" + "b" * 36]
    recs[8]["ci"] = {"system": "gitlab", "job": "x?token=abcdef"}
    recs[9]["command"] = "kubectl something else"
    recs[10].pop("install_id")
    recs[11]["argv"] = ["get", "cm", "naïve", "é\"q"]
    path = tmp_path / "gen.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=bool(i % 2)) + "\n" for i, r in enumerate(recs)))
    result = st.run("import", str(path))
    assert result.exit_code == 0, result.output
    masker = transfer.Masker()
    for raw in recs:
        expected = [int(v) if isinstance(v, bool) else v
                    for v in transfer.to_row(masker.record(transfer.normalize(json.loads(json.dumps(raw)))))]
        row = st.conn.execute(f"SELECT {', '.join(store.FIELDS)} FROM records WHERE id = ?", (raw["id"],)).fetchone()
        got = list(row)
        for i, name in enumerate(store.FIELDS):
            if name in store.JSON_FIELDS and got[i] is not None:
                assert json.loads(got[i]) == json.loads(expected[i]), name
            else:
                assert got[i] == expected[i], (name, got[i], expected[i])
    assert "secretpass" not in path.read_text() or "secretpass" not in json.dumps(st.json("history"))
    assert st.run("import", str(path)).stderr.startswith("imported 0 new record(s) of 400 read")
