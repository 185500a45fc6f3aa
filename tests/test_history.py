"""`history` and `show`: every filter, every output format (parsed back), hostile full-text input,
errors, and a few runs through the real CLI in a subprocess."""

from __future__ import annotations

import csv
import subprocess
import io
import json
import time
from datetime import datetime

import pytest
import yaml

from kubectl_record import filters
from tests.conftest import real_kubectl, recorder  # noqa: F401 (fixture)
from tests.recordfactory import make_record, rfc3339, st  # noqa: F401 (fixture)


def test_plain_history_is_every_context_and_namespace_newest_first(st):
    a = make_record("get pods", context="dev", namespace="a", ago=300)
    b = make_record("get svc", context="prod-eu", namespace="b", ago=200)
    c = make_record("get nodes", context="staging", namespace=None, resource="nodes", ago=100)
    st.add(a, b, c)
    assert st.history_ids() == [c["id"], b["id"], a["id"]]
    out = st.run("history")
    assert out.exit_code == 0
    lines = out.stdout.splitlines()
    assert lines[0].split() == ["ID", "AGE", "CONTEXT", "NAMESPACE", "EXIT", "SERVER", "DURATION", "COMMAND"]
    assert lines[1].split()[0] == c["id"][-8:]
    assert "kubectl get nodes" in lines[1]
    assert "\x1b[" not in out.stdout  # no colour off a terminal


def test_table_limit_defaults_to_50_and_machine_formats_print_everything(st):
    st.add(*[make_record(f"get pods p{i}", ago=1000 - i) for i in range(60)])
    assert len(st.run("history").stdout.splitlines()) == 51
    assert len(st.run("history", "--no-headers").stdout.splitlines()) == 50
    assert len(st.json("history")) == 60
    assert len(st.run("history", "-o", "jsonl").stdout.splitlines()) == 60
    assert len(st.json("history", "--limit", "7")) == 7
    assert len(st.run("history", "--limit", "0").stdout.splitlines()) == 61


def test_reverse_gives_the_newest_n_oldest_first(st):
    recs = st.add(*[make_record(f"get pods p{i}", ago=100 - i) for i in range(10)])
    newest3 = [r["id"] for r in recs[-3:]]
    assert st.history_ids("--limit", "3", "--reverse") == newest3
    assert st.history_ids("--reverse") == [r["id"] for r in recs]


def test_unique_collapses_repeats_to_the_newest(st):
    old = make_record("get pods", ago=300)
    mid = make_record("get svc", ago=200)
    new = make_record("get pods", ago=100)
    other_ctx = make_record("get pods", context="prod", ago=50)
    st.add(old, mid, new, other_ctx)
    assert st.history_ids("--unique") == [other_ctx["id"], new["id"], mid["id"]]
    assert st.history_ids("--unique", "--limit", "2") == [other_ctx["id"], new["id"]]


@pytest.mark.parametrize("args, expected", [
    (["--context", "prod-*"], {"p1", "p2"}),
    (["--context", "prod-eu"], {"p1"}),
    (["--context", "dev", "--context", "staging"], {"d", "s"}),
    (["-n", "payments"], {"p1", "s"}),
    (["--namespace", "payments", "-A"], {"p1", "p2", "d", "s"}),
    (["-A"], {"p1", "p2", "d", "s"}),
    (["--cluster", "prod-*"], {"p1", "p2"}),
    (["--verb", "delete"], {"p2"}),
    (["--verb", "rollout"], {"s"}),
    (["--verb", "rollout restart"], {"s"}),
    (["--resource", "deploy"], {"p2", "s"}),
    (["--resource", "deployments"], {"p2", "s"}),
    (["--resource", "Pod"], {"p1", "d"}),
    (["--name", "web-42"], {"p2"}),
    (["--name", "web-*"], {"p2", "d"}),
    (["--failed"], {"p2", "s"}),
    (["--exit", "1"], {"p2"}),
    (["--exit", "0"], {"p1"}),
    (["--mutating"], {"p2", "s"}),
    (["--read-only"], {"p1", "d"}),
    (["--source", "shim"], {"s"}),
    (["--host", "ci-*"], {"s"}),
    (["--user", "admin"], {"p1", "p2"}),
    (["--identity", "alice@example.com"], {"p1"}),
    (["--cwd", "/src/app"], {"p1", "d"}),
    (["--cwd", "/src/app/sub"], {"d"}),
    (["--session", "s-2"], {"s"}),
    (["--context", "prod-*", "--failed", "--resource", "deploy"], {"p2"}),
    (["-n", "payments", "--failed", "--resource", "deployments"], {"s"}),
])
def test_filters(st, args, expected):
    recs = {
        "p1": make_record("get pods -n payments", context="prod-eu", cluster="prod-a", namespace="payments",
                          user="admin", identity="alice@example.com", cwd="/src/app", exit_code=0),
        "p2": make_record("delete deploy web-42", context="prod-us", cluster="prod-b", namespace="web",
                          resource="deployments", names=["web-42"], mutating=True, exit_code=1, user="admin",
                          cwd="/src/other"),
        "d": make_record("get pods web-1", context="dev", namespace="team", names=["web-1"], exit_code=None,
                         state="unfinished", cwd="/src/app/sub"),
        "s": make_record("rollout restart deploy api", context="staging", namespace="payments",
                         verb="rollout restart", resource="deployments", names=["api"], mutating=True,
                         exit_code=130, source="shim", host="ci-7", session="s-2", cwd="/srv"),
    }
    st.add(*recs.values())
    by_id = {r["id"]: k for k, r in recs.items()}
    got = {by_id[i] for i in st.history_ids(*args)}
    assert got == expected


def test_since_and_until(st):
    old = make_record("get a", ago=10 * 86400)
    mid = make_record("get b", ago=3 * 3600)
    new = make_record("get c", ago=60)
    st.add(old, mid, new)
    assert st.history_ids("--since", "2h") == [new["id"]]
    assert st.history_ids("--since", "7d") == [new["id"], mid["id"]]
    assert st.history_ids("--until", "2h") == [mid["id"], old["id"]]
    assert st.history_ids("--since", "1h30m", "--until", "30s") == [new["id"]]
    day = datetime.fromtimestamp(time.time() - 10 * 86400).strftime("%Y-%m-%d")
    assert old["id"] in st.history_ids("--since", day)
    assert st.history_ids("--until", day) == []
    ts = str(int(time.time() - 3600))
    assert st.history_ids("--since", ts) == [new["id"]]
    assert st.history_ids("--since", rfc3339(time.time() - 3600)) == [new["id"]]


def test_parse_time_forms():
    now = 1_800_000_000.0
    assert filters.parse_time("2h", now) == now - 7200
    assert filters.parse_time("1h30m", now) == now - 5400
    assert filters.parse_time("1700000000", now) == 1_700_000_000
    assert filters.parse_time("1700000000123", now) == 1_700_000_000.123
    assert filters.parse_time("2026-11-27T10:00:00Z", now) == datetime.fromisoformat("2026-11-27T10:00:00+00:00").timestamp()
    assert filters.parse_time("2026-11-27T10:00:00+01:00", now) == datetime.fromisoformat("2026-11-27T09:00:00+00:00").timestamp()
    # No zone: local time.
    assert filters.parse_time("2026-11-27 10:00", now) == datetime(2026, 11, 27, 10, 0).timestamp()
    assert filters.parse_time("2026-11-27", now) == datetime(2026, 11, 27).timestamp()
    for bad in ("yesterdayish", "2h ago", "", "13/01/2026", "-5m"):
        with pytest.raises(ValueError):
            filters.parse_time(bad, now)


@pytest.mark.parametrize("text", [
    "kube-system", '"', '""', "'", "*", "(", ")", "((", "a AND", "OR", "NOT x", "NEAR(a b)", "col:value",
    "^x", "a*b", '"unbalanced', "-", "--", "\\", "%", "_", "\x00", "naïve ünïcode", "x" * 500, "get pods",
    "web-*", "{", "a + b",
])
def test_full_text_search_is_safe_with_any_input(st, text):
    st.add(make_record("get pods -n kube-system"), make_record("logs web-42 -n payments"))
    result = st.run("history", "-q", text, "-o", "json")
    assert result.exit_code == 0, result.output
    json.loads(result.stdout)


def test_full_text_search_finds_words_phrases_and_prefixes(st):
    ks = make_record("get pods -n kube-system", namespace="kube-system")
    web = make_record("logs web-42 -n payments", namespace="payments")
    star = make_record(["get", "pods", "-l", "app=*"])
    st.add(ks, web, star)
    assert st.history_ids("-q", "kube-system") == [ks["id"]]
    assert st.history_ids("-q", "web-42") == [web["id"]]
    assert st.history_ids("-q", "pay*") == [web["id"]]
    assert st.history_ids("-q", "PODS") == [star["id"], ks["id"]]
    assert st.history_ids("-q", "*") == [star["id"]]  # punctuation only: a substring search
    assert st.history_ids("-q", "nothing-like-this") == []


def test_full_text_search_many_matches_takes_the_walking_plan(st, monkeypatch):
    monkeypatch.setattr(filters, "COMMON_MATCHES", 3)
    recs = st.add(*[make_record(f"get pods p{i}", ago=100 - i) for i in range(10)], make_record("get svc", ago=1))
    assert st.history_ids("-q", "pods", "--limit", "4") == [r["id"] for r in reversed(recs[6:10])]
    where, _ = filters.Filters(query="pods").where(conn=st.conn, limited=True)
    assert "EXISTS" in where


def test_output_formats_parse_back(st):
    recs = st.add(make_record("get pods -o 'jsonpath={.items}'", names=["a,b", 'q"uote'], ci={"system": "gitlab"}),
                  make_record("delete pod x", mutating=True, exit_code=1))
    full = st.json("history")
    assert [r["id"] for r in full] == [recs[1]["id"], recs[0]["id"]]
    stored = {r["id"]: r for r in full}
    assert stored[recs[0]["id"]]["names"] == ["a,b", 'q"uote']
    assert stored[recs[0]["id"]]["ci"] == {"system": "gitlab"}
    assert stored[recs[1]["id"]]["mutating"] is True

    jsonl = [json.loads(line) for line in st.run("history", "-o", "jsonl").stdout.splitlines()]
    assert jsonl == full

    rows = list(csv.DictReader(io.StringIO(st.run("history", "-o", "csv").stdout)))
    assert [r["id"] for r in rows] == [r["id"] for r in full]
    assert json.loads(rows[1]["names"]) == ["a,b", 'q"uote']
    assert rows[0]["mutating"] == "true" and rows[0]["exit_code"] == "1" and rows[0]["identity"] == ""

    tsv = list(csv.reader(io.StringIO(st.run("history", "-o", "tsv", "--no-headers").stdout), dialect="excel-tab"))
    assert len(tsv) == 2 and tsv[0][0] == full[0]["id"]

    assert yaml.safe_load(st.run("history", "-o", "yaml").stdout) == full
    assert st.run("history", "-o", "name").stdout.split() == [r["id"] for r in full]

    cc = st.run("history", "-o", "custom-columns=ID:.id,NAME:.names[0],CI:.ci.system,EXIT:.exit_code").stdout
    lines = [line.split() for line in cc.splitlines()]
    assert lines[0] == ["ID", "NAME", "CI", "EXIT"]
    assert lines[1] == [full[0]["id"], "<none>", "<none>", "1"]
    assert lines[2] == [full[1]["id"], "a,b", "gitlab", "0"]

    tpl = st.run("history", "-o", "template={id}\\t{verb}\\t{names}").stdout.splitlines()
    assert tpl[0].split("\t") == [full[0]["id"], "delete", ""]

    wide = st.run("history", "-o", "wide").stdout.splitlines()
    assert wide[0].split()[:3] == ["ID", "STARTED", "AGE"] and wide[1].split()[0] == full[0]["id"]


def test_empty_result_is_not_an_error(st):
    result = st.run("history", "--context", "nowhere")
    assert result.exit_code == 0 and result.stdout == ""
    assert st.json("history", "--context", "nowhere") == []
    assert yaml.safe_load(st.run("history", "--context", "nowhere", "-o", "yaml").stdout) == []
    assert st.run("history", "--context", "nowhere", "-o", "csv").stdout.startswith("id,install_id")


@pytest.mark.parametrize("args", [
    ["--since", "yesterdayish"], ["--until", "soon"], ["--mutating", "--read-only"], ["-o", "bogus"],
    ["--limit", "-1"], ["--exit", "x"], ["--source", "telepathy"], ["-o", "custom-columns=nocolon"],
    ["-o", "template={nosuchfield}"], ["--nosuchflag"],
])
def test_bad_usage_is_one_line_and_exit_2(st, args):
    st.add(make_record())
    result = st.run("history", *args)
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "Traceback" not in result.output


def test_show_accepts_id_prefix_and_the_short_id(st):
    a, b = st.add(make_record("get pods", audit={"status": "exact", "events": [
        {"audit_id": "e1", "verb": "list", "resource": "pods", "namespace": "default", "name": None, "code": 200,
         "decision": "allow"}]}), make_record("get svc"))
    short = st.run("history", "--no-headers").stdout.splitlines()[-1].split()[0]
    assert short == a["id"][-8:]
    for ident in (a["id"], a["id"][:30], short):
        result = st.run("show", ident)
        assert result.exit_code == 0, result.output
        assert "ID:" in result.stdout and a["id"] in result.stdout
    text = st.run("show", a["id"]).stdout
    assert "Audit:" in text and "exact" in text and "e1" in text
    shown = json.loads(st.run("show", short, "-o", "json").stdout)
    assert shown["id"] == a["id"] and shown["seq"] == 1 and shown["hash"]


def test_show_lists_an_ambiguous_runs_likeliest_calls_then_the_possible_ones(st):
    get = {"audit_id": "g-mine", "verb": "get", "resource": "pods", "namespace": "default", "name": "web-0",
           "code": 200, "decision": "allow"}
    (a,) = st.add(make_record("describe pod web-0", audit={
        "status": "ambiguous", "events": [get], "possible": [dict(get, audit_id="g-other")]}))
    text = st.run("show", a["id"]).stdout
    linked, possible = text.split("Possible audit events (other runs likelier):")
    assert "g-mine" in linked and "g-other" not in linked
    assert "g-other" in possible and "g-mine" not in possible


def test_show_ambiguous_and_missing(st):
    a = make_record(id="abc-1")
    b = make_record(id="abc-2")
    st.add(a, b)
    amb = st.run("show", "abc")
    assert amb.exit_code == 2 and "ambiguous" in amb.stderr
    missing = st.run("show", "zzzzzzzz")
    assert missing.exit_code == 1 and "no record" in missing.stderr
    assert st.run("show", "abc-1").exit_code == 0


def test_cli_subprocess_real_store(st):
    st.add(*[make_record(f"get pods p{i}", ago=500 - i) for i in range(300)])
    proc = st.subprocess("history", "-o", "jsonl", "--context", "dev", "--since", "1h")
    assert proc.returncode == 0, proc.stderr
    assert len(proc.stdout.splitlines()) == 300
    bad = st.subprocess("history", "--since", "yesterdayish")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and bad.stderr.startswith("error:")
    empty = st.subprocess("history", "-n", "nowhere")
    assert empty.returncode == 0 and empty.stdout == ""


@pytest.mark.parametrize("fmt", ["table", "jsonl", "json", "csv", "yaml"])
def test_closed_pipe_prints_no_traceback(st, fmt):
    st.add(*[make_record(f"get pods p{i}", ago=5000 - i) for i in range(3000)])
    proc = st.subprocess("history", "-o", fmt, "--limit", "0", shell_tail="| head -1")
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    assert proc.stdout.count("\n") == 1


def test_end_to_end_recorded_run_is_found(recorder):
    """A real kubectl run through the wrapper, then found by history filters and shown."""
    real_kubectl()
    run = subprocess.run([recorder.bin("kubectl-record"), "--", "version", "--client"], env=recorder.env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    found = json.loads(recorder.cli("history", "--verb", "version", "--read-only", "-o", "json").stdout)
    assert len(found) == 1 and found[0]["argv"] == ["version", "--client"] and found[0]["exit_code"] == 0
    short = recorder.cli("history", "--no-headers").stdout.split()[0]
    shown = json.loads(recorder.cli("show", short, "-o", "json").stdout)
    assert shown["id"] == found[0]["id"]
    stats = json.loads(recorder.cli("stats", "-o", "json").stdout)
    assert stats["overall"]["count"] == 1


def test_show_includes_correlated_audit_events(st):
    [rec] = st.add(make_record("delete pod x", mutating=True))
    try:
        st.conn.execute(
            "INSERT INTO audit_events (audit_id, server, stages, rank, ts, verb, resource, namespace, name, code,"
            " decision, record_id) VALUES ('ev-1', 'https://s', 1, 1, 1.0, 'delete', 'pods', 'default', 'x', 200,"
            " 'allow', ?)", (rec["id"],))
    except Exception:
        pytest.skip("no audit_events table (audit migration absent)")
    shown = json.loads(st.run("show", rec["id"], "-o", "json").stdout)
    assert shown["audit"]["events"][0]["audit_id"] == "ev-1"
    assert "ev-1" in st.run("show", rec["id"]).stdout


def test_table_colour_only_when_asked():
    from kubectl_record.history import table_columns
    from kubectl_record.output import use_color, write_table

    out = io.StringIO()
    rec = make_record("delete pod x", mutating=True, exit_code=1)
    write_table([rec], table_columns(False, time.time()), color=True, out=out)
    assert "\x1b[" in out.getvalue()
    assert use_color(io.StringIO()) is False


def test_session_current(st, monkeypatch):
    a, b = st.add(make_record("get a", session="s-1"), make_record("get b", session="s-2"))
    monkeypatch.setenv("KUBECTL_RECORD_SESSION", "s-2")
    assert st.history_ids("--session", "current") == [b["id"]]
    monkeypatch.delenv("KUBECTL_RECORD_SESSION")
    result = st.run("history", "--session", "current")
    assert result.exit_code == 2 and "KUBECTL_RECORD_SESSION" in result.stderr
